#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into Markdown tables.

    python3 bench/report.py bench/results/<timestamp>

Reads scenarios.jsonl (one line per oha run, with tollgate's CPU ticks and
peak RSS around it), the oha JSON files it names, and machine.json. Standard
library only.
"""

import json
import sys
from pathlib import Path


def load(out: Path):
    scenarios = []
    for line in (out / "scenarios.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        meta = json.loads(line)
        meta["result"] = json.loads((out / meta["oha"]).read_text())
        scenarios.append(meta)
    machine_file = out / "machine.json"
    machine = json.loads(machine_file.read_text()) if machine_file.exists() else {}
    return scenarios, machine


def ok_count(result) -> int:
    return int(result.get("statusCodeDistribution", {}).get("200", 0))


def total_count(result) -> int:
    codes = sum(int(n) for n in result.get("statusCodeDistribution", {}).values())
    errors = sum(int(n) for n in result.get("errorDistribution", {}).values())
    return codes + errors


def failures(result) -> str:
    """Empty when every request answered 200, else a short description."""
    bad = {k: v for k, v in result.get("statusCodeDistribution", {}).items() if k != "200"}
    parts = [f"HTTP {k}: {v}" for k, v in sorted(bad.items())]
    parts += [f"{k}: {v}" for k, v in sorted(result.get("errorDistribution", {}).items())]
    return "; ".join(parts)


def rps(result) -> float:
    return float(result["summary"]["requestsPerSec"])


def pct_ms(result, key: str):
    v = result.get("latencyPercentiles", {}).get(key)
    return None if v is None else float(v) * 1000.0


def ttfb_ms(result, key: str):
    """Time to first byte, if this oha version reports it (it does not, as of 1.x)."""
    for section in ("firstBytePercentiles", "ttfbPercentiles", "timeToFirstBytePercentiles"):
        if section in result:
            v = result[section].get(key)
            return None if v is None else float(v) * 1000.0
    return None


def cpu_us_per_req(meta, key="gw_cpu_ticks"):
    n = ok_count(meta["result"])
    if not n or key not in meta:
        return None
    return meta[key] / meta["clk_tck"] * 1e6 / n


def busy(meta):
    """Share of one core the gateway used during the run."""
    if not meta.get("wall_s"):
        return None
    return meta["gw_cpu_ticks"] / meta["clk_tck"] / meta["wall_s"]


def mib(kib):
    return None if kib is None else kib / 1024.0


def f(v, fmt="{:.0f}"):
    return "–" if v is None else fmt.format(v)


def ratio(a, b, fmt="{:.2f}×"):
    if a is None or b is None or b == 0:
        return "–"
    return fmt.format(a / b)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    scenarios, machine = load(out)
    by = {(s["mode"], s["concurrency"], s["target"]): s for s in scenarios}
    problems = []
    for s in scenarios:
        bad = failures(s["result"])
        if bad or ok_count(s["result"]) == 0:
            problems.append(f"{s['name']}: {bad or 'no successful request'}")

    print(f"## tollgate benchmark ({out.name})\n")
    if machine:
        print(
            f"Machine: {machine.get('nproc')} cores, {machine.get('cpu')}, Linux {machine.get('kernel')}; "
            f"{machine.get('oha')}; {machine.get('seconds')} s per scenario after {machine.get('warmup')} s warm-up; "
            f"streams have {machine.get('chunks')} content chunks + finish + usage + [DONE].\n"
        )
        print(
            f"Core pinning: mock upstream and oha on core {machine.get('mock_core')}, "
            f"tollgate alone on core {machine.get('gw_core')} (taskset).\n"
        )
    print(
        "| scenario | c | direct req/s | tollgate req/s | ratio | direct p50 ms | tollgate p50 ms | +p50 ms "
        "| direct p99 ms | tollgate p99 ms | p99 ratio | tollgate CPU µs/req | tollgate core busy | mock CPU µs/req | tollgate peak RSS MiB | all 200? |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|")
    have_ttfb = False
    for mode in ("plain", "stream"):
        for c in sorted({s["concurrency"] for s in scenarios if s["mode"] == mode}):
            d, t = by.get((mode, c, "direct")), by.get((mode, c, "tollgate"))
            if not d or not t:
                continue
            dr, tr = d["result"], t["result"]
            have_ttfb = have_ttfb or ttfb_ms(tr, "p50") is not None
            d50, t50 = pct_ms(dr, "p50"), pct_ms(tr, "p50")
            d99, t99 = pct_ms(dr, "p99"), pct_ms(tr, "p99")
            all_ok = "yes" if not failures(dr) and not failures(tr) else "**NO**"
            label = "non-streaming" if mode == "plain" else "streaming"
            print(
                f"| {label} | {c} | {f(rps(dr))} | {f(rps(tr))} | {ratio(rps(tr), rps(dr))} "
                f"| {f(d50, '{:.3f}')} | {f(t50, '{:.3f}')} | {f(None if d50 is None or t50 is None else t50 - d50, '{:+.3f}')} "
                f"| {f(d99, '{:.3f}')} | {f(t99, '{:.3f}')} | {ratio(t99, d99)} "
                f"| {f(cpu_us_per_req(t), '{:.1f}')} | {f(busy(t), '{:.0%}')} | {f(cpu_us_per_req(d, 'mock_cpu_ticks'), '{:.1f}')} "
                f"| {f(mib(t.get('gw_hwm_kib')), '{:.1f}')} | {all_ok} |"
            )
    print()
    xrows = []
    for mode in ("plain", "stream"):
        d, x, o, t = (by.get((mode, 1, k)) for k in ("direct", "xcore", "samecore", "tollgate"))
        if d and x and o and t:
            d50, x50, o50, t50 = (pct_ms(s["result"], "p50") for s in (d, x, o, t))
            label = "non-streaming" if mode == "plain" else "streaming"
            xrows.append(
                f"| {label} | {d50:.3f} | {x50:.3f} | {t50:.3f} | {t50 - d50:+.3f} "
                f"| {o50:.3f} | {o50 - d50:+.3f} | {f(cpu_us_per_req(o), '{:.1f}')} |"
            )
    if xrows:
        print("Concurrency 1, p50 latency in ms, with two controls. *Direct, cross-core*: the mock "
              "alone on core 1, so each request and answer crosses cores once (the price of waking "
              "an idle core). Through tollgate on core 1 they cross cores twice per request "
              "(oha → tollgate → mock and back). *Tollgate on core 0*: a second tollgate pinned with "
              "oha and the mock, so nothing crosses cores and the difference to direct is tollgate's "
              "own work on the critical path.\n")
        print("| scenario | direct | direct, cross-core | tollgate (core 1) | added | tollgate on core 0 | added | core-0 tollgate CPU µs/req |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|")
        print("\n".join(xrows))
        print()
    print(
        "Latencies are oha's, client-side, until the whole body has been read (for streams: "
        "until `data: [DONE]`). CPU µs/req = (utime+stime of the process over the measured run) "
        "/ successful requests; *core busy* = that CPU time / the run's wall time (100% = tollgate "
        "saturates its core, so its req/s is its single-core capacity). Peak RSS = VmHWM, reset (clear_refs 5) before each run, so it is "
        "the peak during that run over the memory the process already held."
    )
    if have_ttfb:
        print("\nTime to first byte (oha's `firstBytePercentiles`: until the response head and first "
              "body bytes arrive), p50 / p99 ms:\n")
        print("| scenario | c | direct | through tollgate |")
        print("|---|--:|--:|--:|")
        for s in scenarios:
            if s["target"] != "tollgate" or ttfb_ms(s["result"], "p50") is None:
                continue
            d = by.get((s["mode"], s["concurrency"], "direct"))
            dt = f"{ttfb_ms(d['result'], 'p50'):.3f} / {ttfb_ms(d['result'], 'p99'):.3f}" if d else "–"
            label = {"plain": "non-streaming", "stream": "streaming", "slow": "slow streams"}[s["mode"]]
            print(f"| {label} | {s['concurrency']} | {dt} "
                  f"| {ttfb_ms(s['result'], 'p50'):.3f} / {ttfb_ms(s['result'], 'p99'):.3f} |")
    else:
        print(
            "\nTime to first byte: not available; this oha version's JSON has no first-byte "
            "timing, only whole-request latency."
        )

    slow = [s for s in scenarios if s["mode"] == "slow"]
    if slow:
        print("\n### Slow streams held open\n")
        print(
            "| concurrent streams | event gap ms | streams completed | streams/s | p50 s | p99 s "
            "| tollgate idle RSS MiB | tollgate peak RSS MiB | peak fds | tollgate CPU µs/stream | listen-queue overflows | all 200? |"
        )
        print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|")
        for s in slow:
            r = s["result"]
            p50, p99 = pct_ms(r, "p50"), pct_ms(r, "p99")
            print(
                f"| {s['concurrency']} | {s.get('slow_ms')} | {ok_count(r)} | {f(rps(r), '{:.1f}')} "
                f"| {f(None if p50 is None else p50 / 1000, '{:.2f}')} | {f(None if p99 is None else p99 / 1000, '{:.2f}')} "
                f"| {f(mib(s.get('gw_idle_rss_kib')), '{:.1f}')} | {f(mib(s.get('gw_hwm_kib')), '{:.1f}')} "
                f"| {s.get('peak_fds')} | {f(cpu_us_per_req(s), '{:.0f}')} | {s.get('listen_overflows', '–')} "
                f"| {'yes' if not failures(r) else '**NO**'} |"
            )
        if any(s.get("listen_overflows") for s in slow):
            print("\nListen-queue overflows (TcpExtListenOverflows, system-wide) mean some of the "
                  "simultaneous connects were dropped and retried by the client's kernel after 1 s: "
                  "that, not tollgate's work, is the ~1 s first-byte p99 of this scenario.")

    print("\n### Targets\n")
    checks = []

    def target(desc, value, limit, unit, fmt="{:.1f}"):
        if value is None:
            checks.append(f"- [ ] {desc}: not measured")
        else:
            mark = "x" if value <= limit else " "
            verdict = "met" if value <= limit else "**MISSED**"
            checks.append(f"- [{mark}] {desc} ≤ {limit} {unit}: {fmt.format(value)} {unit} ({verdict})")

    t16 = by.get(("plain", 16, "tollgate"))
    s16 = by.get(("stream", 16, "tollgate"))
    target("CPU per non-streaming request, c=16", t16 and cpu_us_per_req(t16), 30, "µs")
    target("CPU per 20-chunk stream, c=16", s16 and cpu_us_per_req(s16), 200, "µs")
    for mode, label in (("plain", "non-streaming"), ("stream", "streaming")):
        d1 = by.get((mode, 1, "direct"))
        for kind, where in (("tollgate", "tollgate on its own core"), ("samecore", "everything on one core")):
            t1 = by.get((mode, 1, kind))
            if d1 and t1:
                added = pct_ms(t1["result"], "p50") - pct_ms(d1["result"], "p50")
                target(f"added p50, {label}, c=1, {where}", added, 0.1, "ms", "{:.3f}")
    target("peak RSS, non-streaming c=16", t16 and mib(t16.get("gw_hwm_kib")), 20, "MiB")
    target("peak RSS, streaming c=16", s16 and mib(s16.get("gw_hwm_kib")), 20, "MiB")
    for s in slow:
        target(f"peak RSS, {s['concurrency']} concurrent slow streams", mib(s.get("gw_hwm_kib")), 100, "MiB")
    print("\n".join(checks))

    print("\n### Failures\n")
    print("\n".join(f"- **{p}**" for p in problems) if problems else "None: every request answered 200.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
