// Mixed traffic through `tollgate demo` (conf/demo.yaml): public reads on a stripped route,
// authenticated writes, a protected route, and a deliberately tight rate-limited route.
// Correctness thresholds only: no failed requests, checks pass, the limited route answers
// 200/429 and never 5xx. A threshold failure makes k6 exit 99; load-tests/run.sh fails on it.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const TOKEN = __ENV.TOKEN;
const serverErrors = new Counter('server_errors');
const limited = new Counter('limited_429');

export const options = {
  scenarios: {
    mixed: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 200),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 20,
      maxVUs: 50,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    checks: ['rate>0.999'],
    server_errors: ['count==0'],
    limited_429: ['count>0'],
  },
};

const ok = http.expectedStatuses(200);

export function setup() {
  if (!TOKEN) {
    throw new Error('TOKEN is not set: run through load-tests/run.sh');
  }
}

function count5xx(res) {
  if (res.status >= 500 || res.status === 0) {
    serverErrors.add(1);
  }
}

export default function () {
  const auth = { Authorization: `Bearer ${TOKEN}` };
  const pick = Math.random();
  let res;
  if (pick < 0.35) {
    res = http.get(`${BASE}/orders/7`, { tags: { name: 'orders_read' }, responseCallback: ok });
    check(res, {
      'orders read 200': (r) => r.status === 200,
      'internal fields stripped': (r) => !r.body.includes('internal_cost') && !r.body.includes('supplier_id'),
      'rate-limit headers present': (r) => r.headers['X-Ratelimit-Limit'] !== undefined,
    });
  } else if (pick < 0.55) {
    res = http.post(`${BASE}/orders`, JSON.stringify({ sku: 'A-1', qty: 1 }), {
      headers: Object.assign({ 'Content-Type': 'application/json' }, auth),
      tags: { name: 'orders_write' },
      responseCallback: ok,
    });
    check(res, {
      'authenticated write 200': (r) => r.status === 200,
      'backend saw the verified user': (r) => r.body.includes('"user_id":"loadtest"'),
    });
  } else if (pick < 0.65) {
    res = http.post(`${BASE}/orders`, '{}', {
      tags: { name: 'orders_write_anonymous' },
      responseCallback: http.expectedStatuses(401),
    });
    check(res, {
      'anonymous write 401': (r) => r.status === 401,
      'challenge present': (r) => (r.headers['Www-Authenticate'] || '').includes('Bearer'),
    });
  } else if (pick < 0.85) {
    res = http.get(`${BASE}/payments/42`, { headers: auth, tags: { name: 'payments' }, responseCallback: ok });
    check(res, {
      'payments 200': (r) => r.status === 200,
      'strip_prefix applied': (r) => r.body.includes('"path":"/42"'),
    });
  } else {
    res = http.get(`${BASE}/users/me`, {
      tags: { name: 'users_limited' },
      responseCallback: http.expectedStatuses(200, 429),
    });
    if (res.status === 429) {
      limited.add(1);
    }
    check(res, {
      'limited route answers 200 or 429': (r) => r.status === 200 || r.status === 429,
      '429 carries Retry-After': (r) => r.status !== 429 || Number(r.headers['Retry-After']) >= 1,
    });
  }
  count5xx(res);
}
