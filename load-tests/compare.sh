#!/usr/bin/env bash
# Side-by-side on one machine, one shared upstream (nginx returning ~90 bytes of JSON):
#   (a) the upstream directly            (b) tollgate, routing only
#   (c) tollgate + JWT + rate limit + access log
#   (d) nginx proxy + limit_req + access log     (e) haproxy (if installed)
# Same oha settings for all, runs interleaved a,b,c,d,e × REPS. Pinning: the load generator
# and the upstream share CPU $LOAD_CPU, every proxy runs on CPU $PROXY_CPU with one worker
# (tollgate threads: 1, nginx worker_processes 1, haproxy nbthread 1), so each proxy gets
# exactly one core and they never compete with the load they serve.
# Prints a Markdown table (median of REPS) and writes it to target/load-tests/compare/.
# Loopback only; every run is bounded by DURATION.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/load-tests/compare"
mkdir -p "$out"
run="$(mktemp -d /tmp/tollgate-compare.XXXXXX)"
DURATION="${DURATION:-10s}"
CONNS="${CONNECTIONS:-64}"
REPS="${REPS:-3}"
LOAD_CPU="${LOAD_CPU:-0}"
PROXY_CPU="${PROXY_CPU:-1}"
OHA_VERSION=1.16.0

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
if [ "${#need_apt[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" || true
fi
command -v nginx >/dev/null 2>&1 || { echo "nginx is required" >&2; exit 1; }
command -v oha >/dev/null 2>&1 || cargo install oha --locked --version "$OHA_VERSION"

cargo build --release --locked --bin tollgate
bin="$root/target/release/tollgate"

for f in upstream.nginx.conf nginx.proxy.conf haproxy.cfg tollgate.routing.yaml tollgate.full.yaml; do
  sed "s#__RUN__#$run#g" "$root/load-tests/compare/$f" >"$run/$f"
done
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$run/jwt-secret"
token="$(JWT_SECRET="$(cat "$run/jwt-secret")" "$bin" token --secret-env JWT_SECRET \
  --sub bench --iss bench --aud api --ttl 2h)"

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
start tollgate_b "$PROXY_CPU" "$bin" run -c "$run/tollgate.routing.yaml"
start tollgate_c "$PROXY_CPU" "$bin" run -c "$run/tollgate.full.yaml"
start nginx "$PROXY_CPU" nginx -c "$run/nginx.proxy.conf"
have_haproxy=""
if command -v haproxy >/dev/null 2>&1; then
  start haproxy "$PROXY_CPU" haproxy -f "$run/haproxy.cfg"
  have_haproxy=1
fi

wait_port() {
  for _ in $(seq 100); do
    curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$1/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not answer" >&2
  return 1
}
for p in 4900 4901 4902 4903; do wait_port "$p"; done
[ -n "$have_haproxy" ] && wait_port 4904

# name port pid [auth]
targets=("a_direct 4900 upstream" "b_tollgate_routing 4901 tollgate_b" "c_tollgate_full 4902 tollgate_c auth" "d_nginx_limit_req 4903 nginx")
[ -n "$have_haproxy" ] && targets+=("e_haproxy 4904 haproxy")

# CPU and memory of the proxy *and its children* (nginx and haproxy serve from worker processes).
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
echo "warming up"
for t in "${targets[@]}"; do
  set -- $t
  taskset -c "$LOAD_CPU" oha -z 2s -c "$CONNS" --no-tui -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$2/" >/dev/null
done
for rep in $(seq "$REPS"); do
  for t in "${targets[@]}"; do
    set -- $t
    name="$1"; port="$2"; pidvar="pid_$3"; pid="${!pidvar}"
    auth=()
    [ "${4:-}" = auth ] && auth=(-H "Authorization: Bearer $token")
    before="$(cpu_ticks "$pid")"
    taskset -c "$LOAD_CPU" oha -z "$DURATION" -c "$CONNS" --no-tui --output-format json \
      -o "$out/$name.$rep.json" "${auth[@]}" "http://127.0.0.1:$port/"
    after="$(cpu_ticks "$pid")"
    rss="$(rss_kb "$pid")"
    echo "{\"cpu_ticks\": $((after - before)), \"rss_kb\": $rss}" >"$out/$name.$rep.proc.json"
    echo "rep $rep $name done"
  done
done

python3 - "$out" "$REPS" "$DURATION" "$CONNS" <<'PY' | tee "$out/results.md"
import json, os, statistics, sys
out, reps, duration, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
hz = os.sysconf("SC_CLK_TCK")
secs = float(duration.rstrip("s"))
names = sorted({f.split(".")[0] for f in os.listdir(out) if f.endswith(".1.json")})
rows = {}
for n in names:
    rps, p50, p99, cpu, rss, ok = [], [], [], [], [], []
    for r in range(1, reps + 1):
        j = json.load(open(f"{out}/{n}.{r}.json"))
        p = json.load(open(f"{out}/{n}.{r}.proc.json"))
        rps.append(j["summary"]["requestsPerSec"])
        lat = j["latencyPercentiles"]
        p50.append(lat["p50"] * 1000)
        p99.append(lat["p99"] * 1000)
        ok.append(j["summary"]["successRate"])
        cpu.append(p["cpu_ticks"] / hz / secs * 100)
        rss.append(p["rss_kb"] / 1024)
    rows[n] = dict(rps=statistics.median(rps), p50=statistics.median(p50),
                   p99=statistics.median(p99), cpu=statistics.median(cpu),
                   rss=max(rss), ok=min(ok))
base = rows.get("d_nginx_limit_req", {}).get("rps")
print(f"oha -z {duration} -c {conns}, median of {reps} interleaved runs; proxy pinned to one core\n")
print("| configuration | RPS | p50 ms | p99 ms | proxy CPU % | proxy max RSS MiB | success | vs nginx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for n, r in rows.items():
    ratio = f"{r['rps'] / base:.2f}" if base else "-"
    print(f"| {n} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['cpu']:.0f} | {r['rss']:.1f} | {r['ok']:.4f} | {ratio} |")
PY
echo "raw results in $out"
