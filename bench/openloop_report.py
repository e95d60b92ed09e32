#!/usr/bin/env python3
"""Writes bench/results/openloop.md and openloop-latency.svg from bench/openloop.sh's output.

    openloop_report.py OUT_DIR RESULTS_DIR SMOKE DURATION WARMUP CAP_DURATION RUNS FIXED_IDLE INFLIGHT LOADS MODES MACHINE
"""
import json
import math
import os
import re
import statistics
import sys

(out, results, smoke, duration, warmup, cap_duration, runs, fixed_idle, inflight, loads, modes,
 machine) = sys.argv[1:13]
smoke = smoke == "1"
loads = [int(x) for x in loads.split()]
modes = modes.split()


def load(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def text(name):
    path = os.path.join(out, name)
    return open(path).read().rstrip("\n") if os.path.exists(path) else ""


def num(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


lat = {r["command"]: r["mean"] * 1000 for r in load("floor-lat.json")["results"]}
lib = load("lib-lat.json")
rates = {n: (load(f"rate-{n}.json") or {}).get("ratePerSec") for n in
         ("forkexec", "unshare", "cold", "pool-cli", "capacity")}
capacity = rates["capacity"]
opens = {(m, l): load(f"open-{m}-{l}.json") for m in modes for l in loads}

lines = []
w = lines.append
w(f"# The warm pool under open-loop load ({machine})")
w("")
if smoke:
    w("> **Smoke run.** Every step was shortened (SMOKE=1: a few seconds each, on a machine")
    w("> shared with builds and tests). These numbers only show that the benchmark works;")
    w("> they are not results. Run `bash bench/openloop.sh build` on a quiet machine for those.")
    w("")
w(f"`bash bench/openloop.sh build`: busybox `/bin/true` in one bundle; open-loop points "
  f"{warmup} s warm-up + {duration} s measured, closed-loop rates over {cap_duration} s, "
  f"{runs} hyperfine runs, {os.environ.get('MAX_STARTING', '2')} spawners in each daemon (`maxStarting`). "
  "Only ratios within this run mean anything.")
w("")

# --- floors
w("## Floors, measured in the same run")
w("")
w("| | latency, mean (ms, hyperfine) | rate, 8 closed-loop workers (/s) |")
w("| --- | ---: | ---: |")
w(f"| fork+exec `/bin/true` | {num(lat.get('fork+exec /bin/true'))} | {num(rates['forkexec'], '{:.0f}')} |")
w(f"| `unshare -fpmuin true` | {num(lat.get('unshare -fpmuin true'))} | {num(rates['unshare'], '{:.0f}')} |")
w(f"| `tarn pool run` (a CLI process per request) | {num(lat.get('tarn pool run'))} | "
  f"{num(rates['pool-cli'], '{:.0f}')} |")
w(f"| client library (`tarn-openloop`, 8 threads) | {num(lib['latencyMs']['mean'])} (sequential, "
  f"`tarn-pool-bench`) | {num(capacity, '{:.0f}')} |")
w(f"| posix_spawn of `/bin/true`, same process | {num(lib['forkExecMs']['mean'])} | – |")
w(f"| `tarn run` (cold) | {num(lat.get('tarn run (cold)'))} | {num(rates['cold'], '{:.0f}')} |")
w("")
w(f"**Capacity** (the 100% load below): {capacity:.0f} claims/s, the rate 8 closed-loop "
  "workers sustain through the client library on an adaptive pool. The pool after it:")
w("")
w("```")
w(text("capacity-status.txt"))
w("```")
w("")

# --- targets
w("## Targets")
w("")
w("| target | measured | |")
w("| --- | --- | --- |")


def target(name, value, ok, detail):
    w(f"| {name} | {detail} | {'met' if ok else '**missed**'} |" if value is not None else f"| {name} | – | not measured |")


fe, pr = lat.get("fork+exec /bin/true"), lat.get("tarn pool run")
target("`tarn pool run` ≤ 2.5× fork+exec", pr, pr is not None and pr <= 2.5 * fe,
       f"{pr / fe:.2f}× ({pr:.2f} / {fe:.2f} ms)" if pr else "")
lr, ls = lib["latencyMs"]["mean"], lib["forkExecMs"]["mean"]
target("client library ≤ 1.5× posix_spawn", lr, lr <= 1.5 * ls, f"{lr / ls:.2f}× ({lr:.2f} / {ls:.2f} ms)")
un = rates["unshare"]
target("8-client sustained rate ≥ 80% of `unshare -fpmuin` with 8 workers", capacity,
       capacity is not None and un and capacity >= 0.8 * un,
       f"{100 * capacity / un:.0f}% ({capacity:.0f} / {un:.0f} per s)" if un else "")
a75 = opens.get(("adaptive", 75))
if a75 and a75.get("latencyMs"):
    hr = a75["pool"]["hitRatio"]
    p50, p99 = a75["latencyMs"]["p50"], a75["latencyMs"]["p99"]
    target("75% load (adaptive): hit ratio ≥ 95%", hr, hr >= 0.95, f"{100 * hr:.1f}%")
    floor_tail = []
    for f, fname in (("forkexec", "fork+exec"), ("unshare", "unshare")):
        fl = (load(f"open-floor-{f}.json") or {}).get("latencyMs")
        if fl:
            floor_tail.append(f"{fname} {fl['p99'] / fl['p50']:.2f}×")
    floor_note = f"; the floors at 75% of their own rate: {', '.join(floor_tail)}" if floor_tail else ""
    target("75% load (adaptive): p99 ≤ 3× p50", p99, p99 <= 3 * p50,
           f"{p99 / p50:.2f}× ({p99:.2f} / {p50:.2f} ms){floor_note}")
else:
    target("75% load (adaptive): hit ratio ≥ 95%, p99 ≤ 3× p50", None, False, "")
w("")
w("Where a target is missed, [Where a claim's time goes](#where-a-claims-time-goes) shows the timeline "
  "of a claim from this run.")
w("")

# --- open loop
w("## Open loop: Poisson arrivals")
w("")
w(f"Requests arrive with exponential gaps at a fraction of the capacity and are issued on "
  f"schedule whatever the earlier ones are doing, by at most {inflight} in flight; latency runs "
  "from a request's scheduled arrival to its exit status (queueing counts). `delayed`: requests "
  "that found every worker busy and waited; `dropped`: found the backlog (1000) full. Each point "
  f"has a fresh daemon: **adaptive** sizing (min-idle 2), **fixed** sizing (`--sizing fixed "
  f"--min-idle {fixed_idle}`), and **cold**: `tarn run` of the bundle, a posix_spawn of the CLI per "
  "request (the daemon is not running), the same work a caller without the pool does. Hits and "
  "misses are the daemon's counters over the measured window.")
w("")
w("| load | rate (/s) | mode | p50 (ms) | p99 (ms) | p99/p50 | hit ratio | done | delayed | dropped | failed |")
w("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for l in loads:
    for m in modes:
        r = opens.get((m, l))
        if not r:
            continue
        L = r.get("latencyMs") or {}
        hit = f"{100 * r['pool']['hitRatio']:.1f}%" if r.get("pool") else "–"
        ratio = f"{L['p99'] / L['p50']:.2f}" if L else "–"
        w(f"| {l}% | {r['ratePerSec']:.0f} | {m} | {num(L.get('p50'))} | {num(L.get('p99'))} | {ratio} | {hit} | "
          f"{r['completed']} | {r['delayed']} | {r['dropped']} | {r['failed']} |")
w("")
w("The floors under the same relative load: Poisson arrivals at 75% of each one's closed-loop "
  "rate above (a posix_spawn per request, by the same load generator):")
w("")
w("| floor | rate (/s) | p50 (ms) | p99 (ms) | p99/p50 | done | delayed | dropped |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for f, fname in (("forkexec", "fork+exec `/bin/true`"), ("unshare", "`unshare -fpmuin true`")):
    r = load(f"open-floor-{f}.json")
    if not r or not r.get("latencyMs"):
        w(f"| {fname} | – | – | – | – | – | – | – |")
        continue
    L = r["latencyMs"]
    w(f"| {fname} | {r['ratePerSec']:.0f} | {L['p50']:.2f} | {L['p99']:.2f} | {L['p99'] / L['p50']:.2f} | "
      f"{r['completed']} | {r['delayed']} | {r['dropped']} |")
w("")
w("![start→exit latency against load](openloop-latency.svg)")
w("")
w("The pool after each point (adaptive, then fixed; the status line says why the target is what it is):")
w("")
w("```")
for m in modes:
    if m == "cold":
        continue
    for l in loads:
        s = text(f"open-{m}-{l}-status.txt")
        if s:
            w(f"# {m}, {l}%")
            w(s)
w("```")
w("")

# --- timeline
w("## Where a claim's time goes")
w("")
w("Sequential `tarn pool run`, 50 ms apart, with `TARN_POOL_TIMELINE=$EPOCHREALTIME` (the client "
  "library prints each mark in ms since the shell started the client) and `--debug` (the CLI's own "
  "line: sandbox, pid, the daemon's claim time):")
w("")
cli = text("timeline-cli.txt")
marks = ["run", "connected", "sent", "started", "exit"]
rows = []
for line in cli.splitlines():
    m = re.search(r"run ([\d.]+), connected ([\d.]+), sent ([\d.]+), started ([\d.]+), exit ([\d.]+); "
                  r"daemon claim \(request to exec\) ([\d.]+)", line)
    if m:
        rows.append([float(x) for x in m.groups()])
if rows:
    med = [statistics.median(r[i] for r in rows) for i in range(6)]
    w(f"| step (median of {len(rows)}) | at (ms) | took (ms) |")
    w("| --- | ---: | ---: |")
    prev = 0.0
    names = ["client exec'd, CLI parsed: run() entered", "connected to the daemon", "request sent (with stdio fds)",
             "`started` received", "exit status received"]
    for n, v in zip(names, med[:5]):
        w(f"| {n} | {v:.3f} | {v - prev:.3f} |")
        prev = v
    w(f"| (daemon: request received → workload exec'd) | | {med[5]:.3f} |")
    w("")
w("```")
w(cli)
w("```")
w("")
w("The same through the client library in one process (`tarn-openloop --timeline`), ms since `run()` was called:")
w("")
w("```")
w(text("timeline-lib.txt"))
w("```")
w("")
w("What the daemon logs at debug level about the sandboxes (made ahead of the claims, by a spawner):")
w("")
w("```")
w(text("timeline-daemon.txt"))
w("```")

with open(os.path.join(results, "openloop.md"), "w") as f:
    f.write("\n".join(lines) + "\n")

# --- plot: p50 (solid) and p99 (dashed) against load, log latency axis
W, H, L, R, T, B = 720, 440, 70, 150, 40, 50
pts = {}
for m in modes:
    for l in loads:
        r = opens.get((m, l))
        if r and r.get("latencyMs"):
            pts.setdefault(m, []).append((l, r["latencyMs"]["p50"], r["latencyMs"]["p99"]))
vals = [v for s in pts.values() for _, a, b in s for v in (a, b)]
floors = [(n, lat.get(n)) for n in ("fork+exec /bin/true", "unshare -fpmuin true") if lat.get(n)]
vals += [v for _, v in floors]
lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3)))
hi = 10 ** math.ceil(math.log10(max(vals)))
xmin, xmax = 0, max(loads) * 1.05


def X(load):
    return L + (W - L - R) * (load - xmin) / (xmax - xmin)


def Y(ms):
    return H - B - (H - B - T) * (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


colors = {"adaptive": "#d62728", "fixed": "#1f77b4", "cold": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{(W - R + L) / 2}" y="22" text-anchor="middle" font-size="14">start→exit latency under Poisson load'
       f'{" (SMOKE RUN)" if smoke else ""}</text>',
       f'<line x1="{L}" y1="{Y(lo)}" x2="{W - R}" y2="{Y(lo)}" stroke="black"/>',
       f'<line x1="{L}" y1="{Y(lo)}" x2="{L}" y2="{Y(hi)}" stroke="black"/>',
       f'<text x="{(W - R + L) / 2}" y="{H - 12}" text-anchor="middle">load (% of capacity, {capacity:.0f}/s)</text>',
       f'<text x="16" y="{(H - B + T) / 2}" text-anchor="middle" transform="rotate(-90 16 {(H - B + T) / 2})">ms (log)</text>']
d = lo
while d <= hi * 1.0001:
    for k in (1, 2, 5):
        v = d * k
        if v > hi * 1.0001:
            break
        svg.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
        svg.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    d *= 10
for l in loads:
    svg.append(f'<text x="{X(l):.1f}" y="{Y(lo) + 18:.1f}" text-anchor="middle">{l}%</text>')
for n, v in floors:
    svg.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" stroke="#888" stroke-dasharray="2,3"/>')
    svg.append(f'<text x="{W - R + 6}" y="{Y(v) + 4:.1f}" fill="#666">{n.split()[0]} (mean)</text>')
key_y = T + 10
for m, s in pts.items():
    c = colors.get(m, "#7f7f7f")
    for idx, dash in ((1, ""), (2, ' stroke-dasharray="6,4"')):
        p = " ".join(f"{X(q[0]):.1f},{Y(q[idx]):.1f}" for q in s)
        svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{p}"/>')
        for q in s:
            svg.append(f'<circle cx="{X(q[0]):.1f}" cy="{Y(q[idx]):.1f}" r="3" fill="{c}"/>')
    svg.append(f'<line x1="{W - R + 10}" y1="{key_y}" x2="{W - R + 35}" y2="{key_y}" stroke="{c}" stroke-width="2"/>')
    svg.append(f'<text x="{W - R + 40}" y="{key_y + 4}">{m} p50</text>')
    svg.append(f'<line x1="{W - R + 10}" y1="{key_y + 16}" x2="{W - R + 35}" y2="{key_y + 16}" stroke="{c}" '
               f'stroke-width="2" stroke-dasharray="6,4"/>')
    svg.append(f'<text x="{W - R + 40}" y="{key_y + 20}">{m} p99</text>')
    key_y += 40
svg.append("</svg>")
with open(os.path.join(results, "openloop-latency.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
