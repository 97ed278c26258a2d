// Steady load for load-tests/soak.sh: a constant arrival rate for the whole soak, whatever
// happens to the gateway's backends, Redis or config meanwhile. Half the requests come from one
// "heavy" client over its Redis-backed limit (429s are policy, expected); the rest from light
// clients well under it. k6 writes every request to CSV (--out csv); soak.sh buckets them into
// phases. No thresholds here: soak.sh decides.
import http from 'k6/http';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';

export const options = {
  discardResponseBodies: true,
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 200),
      timeUnit: '1s',
      duration: __ENV.DURATION || '90s',
      preAllocatedVUs: 30,
      maxVUs: 100,
    },
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(99)', 'max'],
};

export default function () {
  const heavy = Math.random() < 0.5;
  const client = heavy ? 'heavy' : `light-${__VU}`;
  http.get(`${BASE}/soak/${heavy ? 'heavy' : 'light'}`, {
    headers: { 'X-Client': client },
    timeout: '5s',
    tags: { client: heavy ? 'heavy' : 'light' },
  });
}
