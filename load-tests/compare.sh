#!/usr/bin/env bash
# Side by side on one machine, one shared upstream (nginx answering ~90 bytes of JSON):
#   nginx proxy (the baseline of every ratio)      HAProxy (if installed)
#   floor: a bare Pingora ProxyHttp (examples/floor.rs: same Pingora, features, allocator)
#   tollgate, routing only                          tollgate + JWT + rate limit + access log
#   tollgate_fair: routing only, work_stealing: false (one event loop per worker) and an
#     upstream keep-alive pool of 1,024: the tail-latency configuration
# and, with TLS=1 (default), nginx and tollgate terminating TLS with one certificate:
#   HTTP/1.1 keep-alive over TLS (wrk), h2 (h2load), new handshakes (wrk, Connection: close);
# and, with CACHE=1 (default), cache hits at 64 connections: nginx proxy_cache against
#   tollgate's route `cache` on the same upstream response.
#
# Load: wrk -t1 (one load thread). Pinning: wrk and the upstream share CPU $LOAD_CPU, every
# proxy runs on CPU $PROXY_CPU with one worker (tollgate/floor threads: 1, nginx
# worker_processes 1, haproxy nbthread 1), so each proxy gets exactly one core and never
# competes with the load it serves. Runs are interleaved (for each connection count: rep 1 of
# every target, rep 2 of every target, ...) so drift hits all alike; the table shows medians.
# Peak RSS is each proxy's (and its children's) VmHWM after the runs at that connection count.
#
# Loopback only; every run is bounded by DURATION. Results: target/load-tests/compare/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/load-tests/compare"
rm -rf "$out" && mkdir -p "$out"
run="$(mktemp -d /tmp/tollgate-compare.XXXXXX)"
chmod 711 "$run"   # nginx workers (nobody) create and reach their proxy_cache directory
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64 1000}"
REPS="${REPS:-3}"
TLS="${TLS:-1}"
CACHE="${CACHE:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
if [ "${#need_apt[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" || true
fi
for tool in nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

# The deployable build (Cargo.toml `[profile.production]`: fat LTO), the floor built alike.
# PROFILE=release measures the test build instead.
profile="${PROFILE:-production}"
cargo build --profile "$profile" --locked --bin tollgate --example floor
bin="$root/target/$profile/tollgate"
floor="$root/target/$profile/examples/floor"

for f in upstream.nginx.conf nginx.proxy.conf haproxy.cfg tollgate.routing.yaml tollgate.full.yaml tollgate.tls.yaml \
  tollgate.cache.yaml tollgate.fair.yaml; do
  sed "s#__RUN__#$run#g" "$root/load-tests/compare/$f" >"$run/$f"
done
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$run/jwt-secret"
token="$(JWT_SECRET="$(cat "$run/jwt-secret")" "$bin" token --secret-env JWT_SECRET \
  --sub bench --iss bench --aud api --ttl 2h)"
# One throwaway ECDSA P-256 certificate for both TLS servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$run/tls.key" -out "$run/tls.pem" 2>/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
start() { # name cpu cmd...
  local name="$1" cpu="$2"; shift 2
  taskset -c "$cpu" "$@" >"$run/$name.stdout" 2>"$run/$name.stderr" &
  pids+=("$!")
  eval "pid_$name=$!"
}
start upstream "$LOAD_CPU" nginx -c "$run/upstream.nginx.conf"
start nginx "$PROXY_CPU" nginx -c "$run/nginx.proxy.conf"
start floor "$PROXY_CPU" "$floor" 127.0.0.1:4905 127.0.0.1:4900
start tollgate_routing "$PROXY_CPU" "$bin" run -c "$run/tollgate.routing.yaml"
start tollgate_full "$PROXY_CPU" "$bin" run -c "$run/tollgate.full.yaml"
start tollgate_fair "$PROXY_CPU" "$bin" run -c "$run/tollgate.fair.yaml"
[ "$TLS" = 1 ] && start tollgate_tls "$PROXY_CPU" "$bin" run -c "$run/tollgate.tls.yaml"
[ "$CACHE" = 1 ] && start tollgate_cache "$PROXY_CPU" "$bin" run -c "$run/tollgate.cache.yaml"
have_haproxy=""
if command -v haproxy >/dev/null 2>&1; then
  start haproxy "$PROXY_CPU" haproxy -f "$run/haproxy.cfg"
  have_haproxy=1
fi

wait_url() {
  for _ in $(seq 100); do
    curl -kfsS -o /dev/null -H "Authorization: Bearer $token" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not answer" >&2
  return 1
}
for p in 4900 4901 4902 4903 4905 4909; do wait_url "http://127.0.0.1:$p/"; done
[ -n "$have_haproxy" ] && wait_url "http://127.0.0.1:4904/"
[ "$TLS" = 1 ] && for p in 4913 4921; do wait_url "https://127.0.0.1:$p/"; done
if [ "$CACHE" = 1 ]; then
  # The first request fills each cache; the next must be a hit, or the comparison is void.
  for p in 4908 4907; do
    wait_url "http://127.0.0.1:$p/"
    # A fill is stored when its response has gone out: the next request may still miss.
    hit=""
    for _ in $(seq 20); do
      curl -fsS -o /dev/null -D "$run/cache-check.$p" "http://127.0.0.1:$p/"
      if grep -qi '^x-cache: HIT' "$run/cache-check.$p"; then hit=1; break; fi
      sleep 0.2
    done
    [ -n "$hit" ] || { echo "port $p does not answer from its cache" >&2; cat "$run/cache-check.$p" >&2; exit 1; }
  done
fi

# "name port pidname [auth]"
targets=("nginx 4903 nginx" "floor 4905 floor" "tollgate_routing 4901 tollgate_routing"
  "tollgate_full 4902 tollgate_full auth" "tollgate_fair 4909 tollgate_fair")
[ -n "$have_haproxy" ] && targets=("${targets[0]}" "haproxy 4904 haproxy" "${targets[@]:1}")

# CPU and memory of the proxy *and its children* (nginx and haproxy serve from workers).
family() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() {
  local total=0 p
  for p in $(family "$1"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
rss_kb() {
  local total=0 p
  for p in $(family "$1"); do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# wrk_run file conns url pid [extra wrk args...]: one bounded wrk run, its text output and the
# proxy's CPU ticks and peak RSS.
wrk_run() {
  local file="$1" conns="$2" url="$3" pid="$4"; shift 4
  local before after
  before="$(cpu_ticks "$pid")"
  taskset -c "$LOAD_CPU" wrk -t1 -c "$conns" -d "$DURATION" --latency "$@" "$url" >"$file.txt" 2>&1 || true
  after="$(cpu_ticks "$pid")"
  echo "{\"cpu_ticks\": $((after - before)), \"rss_kb\": $(rss_kb "$pid")}" >"$file.proc.json"
}

echo "warming up"
for t in "${targets[@]}"; do
  set -- $t
  taskset -c "$LOAD_CPU" wrk -t1 -c 64 -d 2s -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$2/" >/dev/null 2>&1 || true
done
for conns in $CONNECTIONS; do
  for rep in $(seq "$REPS"); do
    for t in "${targets[@]}"; do
      set -- $t
      name="$1"; port="$2"; pidvar="pid_$3"
      auth=()
      [ "${4:-}" = auth ] && auth=(-H "Authorization: Bearer $token")
      wrk_run "$out/http.$conns.$name.$rep" "$conns" "http://127.0.0.1:$port/" "${!pidvar}" "${auth[@]}"
      echo "c=$conns rep $rep $name done"
    done
  done
done

if [ "$CACHE" = 1 ]; then
  for p in 4908 4907; do
    taskset -c "$LOAD_CPU" wrk -t1 -c 64 -d 2s "http://127.0.0.1:$p/" >/dev/null 2>&1 || true
  done
  for rep in $(seq "$REPS"); do
    for t in "nginx 4908 nginx" "tollgate 4907 tollgate_cache"; do
      set -- $t
      name="$1"; port="$2"; pidvar="pid_$3"
      wrk_run "$out/cache.hit.$name.$rep" 64 "http://127.0.0.1:$port/" "${!pidvar}"
      echo "cache rep $rep $name done"
    done
  done
fi

if [ "$TLS" = 1 ]; then
  secs="${DURATION%s}"
  for rep in $(seq "$REPS"); do
    for t in "nginx 4913 nginx" "tollgate 4921 tollgate_tls"; do
      set -- $t
      name="$1"; port="$2"; pidvar="pid_$3"; pid="${!pidvar}"
      wrk_run "$out/tls.h1.$name.$rep" 64 "https://127.0.0.1:$port/" "$pid"
      wrk_run "$out/tls.handshake.$name.$rep" 64 "https://127.0.0.1:$port/" "$pid" -H "Connection: close"
      before="$(cpu_ticks "$pid")"
      taskset -c "$LOAD_CPU" h2load -D "$secs" -c 64 -m 10 -t 1 "https://127.0.0.1:$port/" \
        >"$out/tls.h2.$name.$rep.txt" 2>&1 || true
      after="$(cpu_ticks "$pid")"
      echo "{\"cpu_ticks\": $((after - before)), \"rss_kb\": $(rss_kb "$pid")}" >"$out/tls.h2.$name.$rep.proc.json"
      echo "tls rep $rep $name done"
    done
  done
fi

python3 "$root/load-tests/compare_report.py" "$out" "$REPS" "$DURATION" "$CONNECTIONS" | tee "$out/results.md"
echo "raw results in $out"
