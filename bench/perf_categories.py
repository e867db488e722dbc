#!/usr/bin/env python3
"""Splits a `perf script` dump (with call chains) into cost categories.

    perf script -i perf.data -F comm,ip,sym,dso | python3 bench/perf_categories.py

Prints two Markdown tables: *self* time by the leaf frame's category (kernel
parts, allocator, memcpy, crate of the Rust function), and *inclusive* time:
the share of samples whose stack contains a frame of interest (JSON,
tracing, metrics, the upstream client, ...), optionally excluding samples
that also contain another frame. Inlined frames count, so an
inlined serde_json call inside a tollgate function is still JSON. Standard
library only.
"""

import re
import sys
from collections import Counter

FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)(?:\+0x[0-9a-f]+)?(?: \(inlined\))?(?: \((.*)\))?\s*$")

KERNEL_GROUPS = [
    # With cpu-clock sampling in a VM, samples taken while interrupts were off
    # land on the instruction that re-enables them (_raw_spin_unlock_irqrestore,
    # finish_task_switch): mostly wake-ups and context switches.
    ("kernel: scheduler, wake-ups, epoll, futex", re.compile(r"schedule|finish_task_switch|_raw_spin|try_to_wake_up|wake_up|^ep_|epoll|futex|enqueue|dequeue|pick_next|update_curr|hrtimer|irqentry|sysvec|cpuidle|default_idle|^tick|rcu")),
    ("kernel: TCP/IP send/recv", re.compile(r"^_*(tcp|ip|inet|sock|skb|sk|netif|napi|dev|net|neigh|dst|raw|udp)_|^__sys_(send|recv)|loopback|do_softirq|__x64_sys_(sendto|recvfrom|writev|write|read)|_copy_(to|from)_iter|copy_user|validate_xmit|__local_bh|^kfree_skb|^__kfree_skb|^release_sock|^lock_sock")),
    ("kernel: syscall entry/exit", re.compile(r"entry_SYSCALL|do_syscall|syscall_exit|__x64_sys|syscall_return|exit_to_user")),
]

INCLUSIVE = [
    # Tasks: every sample is in one of these two kinds of connection task (or the accept loop).
    ("client-facing connection task (hyper server, axum, handler)", re.compile(r"hyper_util::server::conn|dispatch::Server")),
    ("  of which tollgate's handler (tollgate::server::handlers)", re.compile(r"tollgate::server::handlers")),
    ("  of which middlewares and routing, outside the handler", re.compile(r"tollgate::server::stack|tower_http::|axum::middleware|axum::routing::route"), re.compile(r"tollgate::server::handlers")),
    ("upstream connection task (hyper client)", re.compile(r"hyper::client::conn|dispatch::Client")),
    ("writev (send; on loopback includes the peer's TCP receive and wake-up)", re.compile(r"^__GI___writev|^writev$|^__writev")),
    ("recv/read", re.compile(r"^__libc_recv|^recvfrom|^__GI___libc_read|^read$|^__libc_read|^recv$")),
    ("epoll_wait (tokio IO driver)", re.compile(r"epoll_wait")),
    ("serde_json (parse + serialise)", re.compile(r"serde_json::")),
    ("serde_json parse", re.compile(r"serde_json::de::|serde_json::read::|Deserialize.*serde_json|serde_json::from_")),
    ("serde_json serialise", re.compile(r"serde_json::ser::|serde_json::to_")),
    ("tracing / tracing_subscriber", re.compile(r"\btracing(_subscriber|_core)?::")),
    ("prometheus metrics", re.compile(r"\bprometheus::|tollgate::metering")),
    ("uuid (request ids)", re.compile(r"\buuid::")),
    ("SSE decoder (tollgate::stream)", re.compile(r"tollgate::stream::")),
    ("allocator (malloc/free/realloc)", re.compile(r"^(__libc_|_int_|)(malloc|free|realloc|calloc|cfree)|malloc_consolidate|tcache|unlink_chunk|__rust_(alloc|dealloc|realloc)|<std::alloc::System as core::alloc::global::GlobalAlloc>")),
    ("memcpy/memmove/memset", re.compile(r"__mem(cpy|move|set)|^mem(cpy|move|set)")),
    ("clock reads (clock_gettime)", re.compile(r"clock_gettime")),
]


def crate_of(sym: str) -> str:
    s = sym.lstrip("<&*").replace("dyn ", "").replace("mut ", "")
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", s)
    return m.group(1) if m else ""


def self_category(sym: str, dso: str) -> str:
    if re.search(r"__vdso_clock_gettime|^read_tsc$|^ktime_get", sym):
        return "clock reads"
    if sym.startswith("perf_"):
        return "kernel: profiler overhead (perf)"
    if "kernel" in dso or dso.startswith("[") and dso != "[unknown]":
        for name, pat in KERNEL_GROUPS:
            if pat.search(sym):
                return name
        return "kernel: other"
    if re.match(r"^(__libc_|_int_|)(malloc|free|realloc|calloc|cfree)|malloc_consolidate|tcache|unlink_chunk|<std::alloc::System as core::alloc::global::GlobalAlloc>|alloc::raw_vec::.*grow", sym):
        return "allocator (glibc malloc)"
    if re.search(r"clock_gettime|Timespec>::now|Instant::now", sym):
        return "clock reads"
    if re.search(r"core::hash::sip|hash_one|DefaultHasher|hashbrown::", sym):
        return "hashing + hash maps (SipHash, hashbrown)"
    if re.search(r"from_utf8|run_utf8_validation", sym):
        return "UTF-8 validation"
    if re.search(r"FileDesc>::write_vectored|Socket>::recv_with_flags|^__GI___writev|^__libc_recv|cvt::<", sym):
        return "syscall wrappers (libc/std)"
    if re.match(r"^__mem(cpy|move|set)|^mem(cpy|move|set)", sym):
        return "memcpy/memmove/memset"
    crate = crate_of(sym)
    if crate in ("core", "alloc", "std"):
        if "fmt" in sym:
            return "std formatting (core::fmt)"
        if "drop_in_place" in sym:
            return "drops (drop_in_place)"
        return "std/core/alloc other"
    if crate:
        return f"crate {crate}"
    if "libc" in dso:
        return "libc other"
    return "other/unknown"


def samples(lines):
    stack, header = [], None
    for line in lines:
        if not line.strip():
            if header is not None:
                yield header, stack
            stack, header = [], None
            continue
        if header is None and not line.startswith((" ", "\t")):
            header = line
            continue
        m = FRAME.match(line)
        if m:
            stack.append((m.group(2).strip(), (m.group(3) or "").strip()))
    if header is not None:
        yield header, stack


def main():
    self_counts, incl_counts, n = Counter(), Counter(), 0
    for _, stack in samples(sys.stdin):
        if not stack:
            continue
        n += 1
        # The leaf may be an inlined helper with a bare name (`poll`,
        # `{closure#0}`): charge the nearest frame that names its crate.
        category = None
        for sym, dso in stack:
            category = self_category(sym, dso)
            if category not in ("other/unknown", "libc other"):
                break
        if category in ("other/unknown", "libc other"):
            category = self_category(*stack[0])
        self_counts[category] += 1
        seen = set()
        for name, pat, *exclude in INCLUSIVE:
            if any(pat.search(s) for s, _ in stack) and not (
                exclude and any(exclude[0].search(s) for s, _ in stack)
            ):
                seen.add(name)
        for name in seen:
            incl_counts[name] += 1
    if not n:
        print("no samples with call chains")
        return 1
    print(f"## Self time by category ({n} samples)\n")
    print("| category | share |")
    print("|---|--:|")
    for name, count in self_counts.most_common():
        if count / n >= 0.003:
            print(f"| {name} | {100 * count / n:.1f}% |")
    print(f"\n## Inclusive time: samples whose stack contains… ({n} samples)\n")
    print("| frames | share |")
    print("|---|--:|")
    for name, *_ in INCLUSIVE:
        print(f"| {name} | {100 * incl_counts[name] / n:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
