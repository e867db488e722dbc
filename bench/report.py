#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into Markdown tables.

    python3 bench/report.py bench/results/<timestamp>

Reads scenarios.jsonl (one line per oha run, with the measured proxy's CPU
ticks and peak RSS around it: tollgate's, or the bare proxy's for target
"bare"), the oha JSON files it names, and machine.json. Each scenario is shown
three ways: direct to the mock, through the bare pass-through proxy
(examples/bare_proxy.rs, the floor any proxy pays) and through tollgate.
Standard library only.
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
    """Share of one core the measured proxy used during the run."""
    if not meta or not meta.get("wall_s"):
        return None
    return meta["gw_cpu_ticks"] / meta["clk_tck"] / meta["wall_s"]


def p50(meta):
    return None if not meta else pct_ms(meta["result"], "p50")


def p99(meta):
    return None if not meta else pct_ms(meta["result"], "p99")


def req_s(meta):
    return None if not meta else rps(meta["result"])


def cpu(meta, key="gw_cpu_ticks"):
    return None if not meta else cpu_us_per_req(meta, key)


def hwm_mib(meta):
    return None if not meta else mib(meta.get("gw_hwm_kib"))


def diff(a, b):
    return None if a is None or b is None else a - b


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
            f"Core pinning: mock upstream and oha on core {machine.get('mock_core')}; "
            f"tollgate and the bare proxy on core {machine.get('gw_core')}, measured one at a time (taskset)."
            + (f" Idle RSS after startup: tollgate {mib(machine['gw_idle_rss_kib']):.1f} MiB"
               + (f", bare proxy {mib(machine['bare_idle_rss_kib']):.1f} MiB" if machine.get("bare_idle_rss_kib") else "")
               + "." if machine.get("gw_idle_rss_kib") else "")
            + (f" Source: `{machine['git']}`." if machine.get("git") else "")
            + "\n"
        )
    label_of = {"plain": "non-streaming", "stream": "streaming"}
    rows = []
    for mode in ("plain", "stream"):
        for c in sorted({s["concurrency"] for s in scenarios if s["mode"] == mode}):
            d, b, t = (by.get((mode, c, k)) for k in ("direct", "bare", "tollgate"))
            if d and t:
                rows.append((label_of[mode], c, d, b, t))
    have_ttfb = any(ttfb_ms(t["result"], "p50") is not None for *_, t in rows)

    print("#### Throughput and latency: direct / bare proxy / tollgate\n")
    print(
        "| scenario | c | direct req/s | bare req/s | tollgate req/s | tollgate ÷ bare "
        "| direct p50 ms | bare p50 ms | tollgate p50 ms | bare +p50 ms | tollgate +p50 ms | tollgate − bare p50 ms "
        "| direct p99 ms | bare p99 ms | tollgate p99 ms | all 200? |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|")
    for label, c, d, b, t in rows:
        all_ok = "yes" if not any(failures(x["result"]) for x in (d, b, t) if x) else "**NO**"
        print(
            f"| {label} | {c} | {f(req_s(d))} | {f(req_s(b))} | {f(req_s(t))} | {ratio(req_s(t), req_s(b))} "
            f"| {f(p50(d), '{:.3f}')} | {f(p50(b), '{:.3f}')} | {f(p50(t), '{:.3f}')} "
            f"| {f(diff(p50(b), p50(d)), '{:+.3f}')} | {f(diff(p50(t), p50(d)), '{:+.3f}')} "
            f"| {f(diff(p50(t), p50(b)), '{:+.3f}')} "
            f"| {f(p99(d), '{:.3f}')} | {f(p99(b), '{:.3f}')} | {f(p99(t), '{:.3f}')} | {all_ok} |"
        )
    print("\n#### CPU and memory: bare proxy / tollgate (each alone on core 1)\n")
    print(
        "| scenario | c | bare CPU µs/req | tollgate CPU µs/req | tollgate − bare CPU µs/req | tollgate ÷ bare CPU "
        "| bare core busy | tollgate core busy | mock CPU µs/req (direct run) | bare peak RSS MiB | tollgate peak RSS MiB |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for label, c, d, b, t in rows:
        print(
            f"| {label} | {c} | {f(cpu(b), '{:.1f}')} | {f(cpu(t), '{:.1f}')} "
            f"| {f(diff(cpu(t), cpu(b)), '{:+.1f}')} | {ratio(cpu(t), cpu(b))} "
            f"| {f(busy(b), '{:.0%}')} | {f(busy(t), '{:.0%}')} | {f(cpu(d, 'mock_cpu_ticks'), '{:.1f}')} "
            f"| {f(hwm_mib(b), '{:.1f}')} | {f(hwm_mib(t), '{:.1f}')} |"
        )
    print()
    xrows = []
    for mode in ("plain", "stream"):
        d, x, b, o, t = (by.get((mode, 1, k)) for k in ("direct", "xcore", "bare", "samecore", "tollgate"))
        if d and x and o and t:
            d50, x50, b50, o50, t50 = (p50(s) for s in (d, x, b, o, t))
            xrows.append(
                f"| {label_of[mode]} | {d50:.3f} | {x50:.3f} | {f(b50, '{:.3f}')} | {f(diff(b50, d50), '{:+.3f}')} "
                f"| {t50:.3f} | {t50 - d50:+.3f} | {f(diff(t50, b50), '{:+.3f}')} "
                f"| {o50:.3f} | {o50 - d50:+.3f} | {f(cpu(o), '{:.1f}')} |"
            )
    if xrows:
        print("Concurrency 1, p50 latency in ms, with three controls. *Direct, cross-core*: the mock "
              "alone on core 1, so each request and answer crosses cores once (the price of waking "
              "an idle core). *Bare proxy*: the pass-through proxy on core 1, which parses nothing; "
              "like tollgate on core 1, the data crosses cores twice per request (oha → proxy → mock "
              "and back), so its added p50 is what any proxy pays on this machine, and "
              "*tollgate − bare* is what tollgate's own work adds on top. *Tollgate on core 0*: a second "
              "tollgate pinned with oha and the mock, so nothing crosses cores and the difference to "
              "direct is tollgate's own work on the critical path plus the proxy's unavoidable hop.\n")
        print("| scenario | direct | direct, cross-core | bare proxy (core 1) | added "
              "| tollgate (core 1) | added | tollgate − bare | tollgate on core 0 | added | core-0 tollgate CPU µs/req |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        print("\n".join(xrows))
        print()
    print(
        "Latencies are oha's, client-side, until the whole body has been read (for streams: "
        "until `data: [DONE]`). CPU µs/req = (utime+stime of the process over the measured run) "
        "/ successful requests, for the proxy measured (the bare proxy or tollgate); *core busy* = that "
        "CPU time / the run's wall time (100% = the proxy saturates its core, so its req/s is its "
        "single-core capacity). Peak RSS = VmHWM, reset (clear_refs 5) before each run, so it is "
        "the peak during that run over the memory the process already held."
    )
    if have_ttfb:
        print("\nTime to first byte (oha's `firstBytePercentiles`: until the response head and first "
              "body bytes arrive), p50 / p99 ms:\n")
        print("| scenario | c | direct | through the bare proxy | through tollgate |")
        print("|---|--:|--:|--:|--:|")

        def fb(meta):
            if not meta or ttfb_ms(meta["result"], "p50") is None:
                return "–"
            return f"{ttfb_ms(meta['result'], 'p50'):.3f} / {ttfb_ms(meta['result'], 'p99'):.3f}"

        for s in scenarios:
            if s["target"] != "tollgate" or ttfb_ms(s["result"], "p50") is None:
                continue
            d = by.get((s["mode"], s["concurrency"], "direct"))
            b = by.get((s["mode"], s["concurrency"], "bare"))
            label = {"plain": "non-streaming", "stream": "streaming", "slow": "slow streams"}[s["mode"]]
            print(f"| {label} | {s['concurrency']} | {fb(d)} | {fb(b)} | {fb(s)} |")
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
            s50, s99 = pct_ms(r, "p50"), pct_ms(r, "p99")
            print(
                f"| {s['concurrency']} | {s.get('slow_ms')} | {ok_count(r)} | {f(rps(r), '{:.1f}')} "
                f"| {f(None if s50 is None else s50 / 1000, '{:.2f}')} | {f(None if s99 is None else s99 / 1000, '{:.2f}')} "
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
    # The core's targets (30 and 200 µs) are for the routing path alone; with
    # managed keys, limits and the SQLite ledger all on (bench/run.sh's
    # default), the metering issue's targets apply: 35 and 230 µs.
    config = (out / "tollgate.yaml").read_text() if (out / "tollgate.yaml").exists() else ""
    all_on = "\nledger:" in config and "managed_keys: true" in config
    scope = ", keys, limits, metering and ledger on" if all_on else ""
    target(f"CPU per non-streaming request, c=16{scope}", t16 and cpu_us_per_req(t16), 35 if all_on else 30, "µs")
    target(f"CPU per 20-chunk stream, c=16{scope}", s16 and cpu_us_per_req(s16), 230 if all_on else 200, "µs")
    for mode, label, t in (("plain", "request", t16), ("stream", "stream", s16)):
        b = by.get((mode, 16, "bare"))
        if t and b:
            checks.append(
                f"- (info) CPU per {label}, c=16, tollgate ÷ the bare proxy: "
                f"{cpu_us_per_req(t) / cpu_us_per_req(b):.2f}× ({cpu_us_per_req(b):.1f} µs bare)"
            )
    for mode, label in (("plain", "non-streaming"), ("stream", "streaming")):
        d1 = by.get((mode, 1, "direct"))
        for kind, where in (("tollgate", "tollgate on its own core"), ("samecore", "everything on one core")):
            t1 = by.get((mode, 1, kind))
            if d1 and t1:
                added = pct_ms(t1["result"], "p50") - pct_ms(d1["result"], "p50")
                target(f"added p50, {label}, c=1, {where}", added, 0.1, "ms", "{:.3f}")
    b1, d1 = by.get(("plain", 1, "bare")), by.get(("plain", 1, "direct"))
    if b1 and d1:
        checks.append(
            f"- (info) added p50, non-streaming, c=1, bare proxy on its own core (what any proxy pays "
            f"here): {p50(b1) - p50(d1):.3f} ms; tollgate on its own core adds "
            + f(diff(p50(by.get(("plain", 1, "tollgate"))), p50(b1)), "{:+.3f}")
            + " ms on top of it"
        )
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
