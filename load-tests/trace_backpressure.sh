#!/usr/bin/env bash
# Issue 20: a collector that accepts connections and never answers must not slow requests.
# Side by side in one run, interleaved: tollgate routing-only without tracing, and the same
# config exporting every request's spans (sample_ratio 1) to such a collector. Prints RPS,
# p50 and p99 of each and the spans tollgate dropped and exported. A benchmark note, not a
# timed assertion.
#
# Loopback only; every run bounded by DURATION (default 8s), REPS (default 3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run="$(mktemp -d /tmp/tollgate-trace-bp.XXXXXX)"
DURATION="${DURATION:-8s}"
REPS="${REPS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done
cargo build --release --locked --bin tollgate
bin="$root/target/release/tollgate"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

sed "s#__RUN__#$run#g" "$root/load-tests/compare/upstream.nginx.conf" \
  | sed 's/4900/4940/' >"$run/upstream.nginx.conf"
nginx -c "$run/upstream.nginx.conf" >/dev/null 2>&1 &
pids+=("$!")

# The collector: accepts every connection, reads, never answers, never closes.
cat >"$run/hang.py" <<'EOF'
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 4948)); s.listen(128)
held = []
def drain(c):
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
while True:
    c, _ = s.accept(); held.append(c)
    threading.Thread(target=drain, args=(c,), daemon=True).start()
EOF
python3 "$run/hang.py" &
pids+=("$!")

config() { # port admin extra
  cat <<EOF
server:
  listen: ["127.0.0.1:$1"]
  admin_listen: "127.0.0.1:$2"
  threads: 1
  pid_file: $run/t$1.pid
  upgrade_sock: $run/t$1.sock
  access_log: "off"
  log_level: error
upstreams:
  up: {backends: ["127.0.0.1:4940"], retries: 0}
routes:
  - {name: all, upstream: up}
$3
EOF
}
config 4941 4951 "" >"$run/plain.yaml"
config 4942 4952 'tracing:
  otlp: {endpoint: "http://127.0.0.1:4948", sample_ratio: 1, timeout: 2s}' >"$run/traced.yaml"
"$bin" run -c "$run/plain.yaml" >"$run/plain.log" 2>&1 &
pids+=("$!")
"$bin" run -c "$run/traced.yaml" >"$run/traced.log" 2>&1 &
pids+=("$!")
for port in 4940 4941 4942; do
  for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
done

printf '%-34s %6s %10s %9s %9s\n' target rep RPS "p50 ms" "p99 ms"
for rep in $(seq "$REPS"); do
  for target in plain:4941 "traced to a hanging collector:4942"; do
    name="${target%:*}" port="${target##*:}"
    out="$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/")"
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    printf '%-34s %6s %10s %9s %9s\n' "$name" "$rep" "$rps" "$p50" "$p99"
  done
done
echo
curl -s http://127.0.0.1:4952/metrics | grep -E '^tollgate_trace_spans_(dropped|exported)' || true
