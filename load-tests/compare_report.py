"""Tables for load-tests/compare.sh: medians of the interleaved repetitions, ratios to nginx
and to the bare-Pingora floor, p50/p99, proxy CPU and peak RSS, errors.

usage: compare_report.py OUT_DIR REPS DURATION "CONNECTIONS..."
"""
import json
import os
import re
import statistics
import sys

out, reps, duration, conn_list = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
hz = os.sysconf("SC_CLK_TCK")
secs = float(duration.rstrip("s"))
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def wrk(path):
    """requests/s, p50 ms, p99 ms, errors (socket errors + non-2xx/3xx) of one wrk run."""
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return dict(
        rps=float(rps.group(1)) if rps else 0.0,
        p50=ms(p50.group(1)) if p50 else float("nan"),
        p99=ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
    )


def h2load(path):
    text = open(path).read()
    rps = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text)
    return dict(
        rps=float(rps.group(1)) if rps else 0.0,
        p50=ms(mean.group(1)) if mean else float("nan"),
        p99=float("nan"),
        errors=sum(int(x) for x in failed.groups()) if failed else -1,
    )


def proc(path):
    p = json.load(open(path))
    return p["cpu_ticks"] / hz / secs * 100, p["rss_kb"] / 1024


def summary(prefix, parse):
    runs = [parse(f"{out}/{prefix}.{r}.txt") for r in range(1, reps + 1)]
    procs = [proc(f"{out}/{prefix}.{r}.proc.json") for r in range(1, reps + 1)]
    return dict(
        rps=statistics.median(r["rps"] for r in runs),
        p50=statistics.median(r["p50"] for r in runs),
        p99=statistics.median(r["p99"] for r in runs),
        errors=sum(r["errors"] for r in runs),
        cpu=statistics.median(c for c, _ in procs),
        rss=max(m for _, m in procs),
    )


def names(prefix):
    found = []
    for f in sorted(os.listdir(out)):
        if f.startswith(prefix) and f.endswith(".1.txt"):
            found.append(f[len(prefix):-len(".1.txt")])
    order = ["nginx", "haproxy", "floor", "tollgate_routing", "tollgate_full", "tollgate_fair",
             "tollgate"]
    return sorted(found, key=lambda n: order.index(n) if n in order else 99)


def fmt(x, spec):
    return "-" if x != x else format(x, spec)


print(f"wrk -t1 -d {duration}, median of {reps} interleaved runs; each proxy pinned to one core\n")
for conns in conn_list:
    rows = {n: summary(f"http.{conns}.{n}", wrk) for n in names(f"http.{conns}.")}
    if not rows:
        continue
    base = rows.get("nginx", {}).get("rps")
    floor = rows.get("floor", {}).get("rps")
    print(f"**{conns} connections**\n")
    print("| proxy | RPS | vs nginx | vs floor | p50 ms | p99 ms | CPU % | peak RSS MiB | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        vs_nginx = f"{r['rps'] / base:.2f}" if base else "-"
        vs_floor = f"{r['rps'] / floor:.2f}" if floor else "-"
        print(f"| {n} | {r['rps']:.0f} | {vs_nginx} | {vs_floor} | {fmt(r['p50'], '.2f')} | "
              f"{fmt(r['p99'], '.2f')} | {r['cpu']:.0f} | {r['rss']:.1f} | {r['errors']} |")
    print()

cache = {n: summary(f"cache.hit.{n}", wrk) for n in names("cache.hit.")}
if "nginx" in cache and "tollgate" in cache:
    n, t = cache["nginx"], cache["tollgate"]
    print("**Cache hits**, 64 conns (nginx proxy_cache vs tollgate route `cache`, same response)\n")
    print("| nginx RPS | tollgate RPS | tollgate / nginx | nginx p50 / p99 ms | tollgate p50 / p99 ms | CPU % (nginx / tollgate) | errors (nginx / tollgate) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {n['rps']:.0f} | {t['rps']:.0f} | {t['rps'] / n['rps']:.2f} | "
          f"{fmt(n['p50'], '.2f')} / {fmt(n['p99'], '.2f')} | {fmt(t['p50'], '.2f')} / {fmt(t['p99'], '.2f')} | "
          f"{n['cpu']:.0f} / {t['cpu']:.0f} | {n['errors']} / {t['errors']} |")
    print()

tls = []
for kind, parse, label in [("h1", wrk, "HTTP/1.1 keep-alive over TLS, 64 conns (wrk)"),
                           ("h2", h2load, "h2, 64 conns x 10 streams (h2load; p50 = mean)"),
                           ("handshake", wrk, "new TLS connection per request, 64 conns (wrk)")]:
    rows = {n: summary(f"tls.{kind}.{n}", parse) for n in names(f"tls.{kind}.")}
    if "nginx" in rows and "tollgate" in rows:
        tls.append((label, rows["nginx"], rows["tollgate"]))
if tls:
    print("**TLS** (one ECDSA P-256 certificate; tollgate routing only)\n")
    print("| test | nginx RPS | tollgate RPS | tollgate / nginx | nginx p50 ms | tollgate p50 ms | errors (nginx / tollgate) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, t in tls:
        print(f"| {label} | {n['rps']:.0f} | {t['rps']:.0f} | {t['rps'] / n['rps']:.2f} | "
              f"{fmt(n['p50'], '.2f')} | {fmt(t['p50'], '.2f')} | {n['errors']} / {t['errors']} |")
