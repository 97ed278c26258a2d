#!/usr/bin/env python3
"""Where a proxy's memory goes per keep-alive connection (issue 17, bar 3).

Opens N connections to a proxy on loopback and reads the proxy's RSS (VmRSS, and the peak
VmHWM) at each step: before, with N connections accepted and idle, after one request on each
(all N in flight at once, then idle again), after a second round. Differences divided by N are
the per-connection costs: the first is what an accepted connection costs before any request
(buffers, the task and its per-request state), the second adds what serving a request leaves
behind (upstream connections, their buffers, what the allocator keeps).

    load-tests/conn_memory.py --port 4901 --pid "$(pgrep -f 'tollgate run')" -n 1000

Loopback only; bounded by -n (at most 5000) and a 10 s socket timeout.
"""
import argparse
import socket
import sys
import time


def rss_kib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the proxy's process id")
    parser.add_argument("-n", type=int, default=1000, help="connections (at most 5000)")
    parser.add_argument("--path", default="/")
    parser.add_argument("--header", action="append", default=[],
                        help="extra request header, e.g. 'Authorization: Bearer ...' (repeatable)")
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host != "::1":
        sys.exit("loopback targets only")
    n = min(args.n, 5000)
    extra = "".join(f"{h}\r\n" for h in args.header)
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n{extra}\r\n".encode()

    steps = [("start", rss_kib(args.pid))]
    conns = []
    for _ in range(n):
        c = socket.create_connection((args.host, args.port), timeout=10)
        conns.append(c)
    time.sleep(1)
    steps.append((f"{n} connections, no request", rss_kib(args.pid)))
    for round_no in (1, 2):
        for c in conns:
            c.sendall(request)
        statuses = {}
        for c in conns:
            answer = c.recv(65536)
            if not answer:
                sys.exit("a connection closed before answering")
            status = answer.split(b" ", 2)[1].decode(errors="replace") if b" " in answer else "?"
            statuses[status] = statuses.get(status, 0) + 1
        if set(statuses) != {"200"}:
            print(f"round {round_no}: statuses {statuses} (not all 200: the run does not measure "
                  "what it claims)", file=sys.stderr)
        time.sleep(1)
        steps.append((f"after request round {round_no}", rss_kib(args.pid)))
    for c in conns:
        c.close()

    print(f"{'step':<32} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'KiB/conn vs start':>18}")
    base = steps[0][1]["VmRSS"]
    for name, kib in steps:
        per_conn = (kib["VmRSS"] - base) / n
        print(f"{name:<32} {kib['VmRSS'] / 1024:>10.1f} {kib['VmHWM'] / 1024:>10.1f} {per_conn:>18.1f}")


if __name__ == "__main__":
    main()
