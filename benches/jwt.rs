//! JWT verification cost (issue 3): HS256, RS256 without cache, RS256 through the token cache.
//! The cached path must stay within 10% of HS256. Run: `cargo bench --bench jwt`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tollgate::auth::Auth;
use tollgate::config::Config;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn bench(c: &mut Criterion) {
    let secret_file = std::env::temp_dir().join("tollgate-bench-hs-secret");
    std::fs::write(&secret_file, SECRET).expect("write secret");
    let yaml = format!(
        "upstreams:\n  u: {{backends: [\"127.0.0.1:1\"]}}\nauth:\n  jwt:\n    hs: {{algorithms: [HS256], secret_file: {}, issuer: idp, audience: api}}\n    rs: {{algorithms: [RS256], public_key_file: {}, issuer: idp, audience: api}}\n    rs_nocache: {{algorithms: [RS256], public_key_file: {}, issuer: idp, audience: api}}\nroutes:\n  - {{name: r, upstream: u}}\n",
        secret_file.display(),
        fixture("rsa1_public.pem"),
        fixture("rsa1_public.pem"),
    );
    let config = Config::load_str(&yaml).expect("bench config");
    let auth = Auth::build(&config).expect("auth");
    let mut nocache_config = config.clone();
    nocache_config.auth.token_cache_entries = 0;
    let auth_nocache = Auth::build(&nocache_config).expect("auth");

    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "alice", "iss": "idp", "aud": "api", "exp": now + 3600, "iat": now,
                        "roles": ["admin"], "scope": "orders:read orders:write"});
    let hs_token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign hs");
    let rsa = std::fs::read(fixture("rsa1_private.pem")).expect("rsa key");
    let rs_token = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&rsa).expect("pem"),
    )
    .expect("sign rs");

    let hs = auth_nocache.jwt_index("hs").expect("hs");
    let rs = auth.jwt_index("rs").expect("rs");
    let rs_cold = auth_nocache.jwt_index("rs").expect("rs");

    let mut g = c.benchmark_group("jwt_verify");
    g.bench_function("hs256", |b| {
        b.iter(|| {
            auth_nocache
                .verify_jwt(hs, black_box(&hs_token))
                .expect("valid")
        })
    });
    g.bench_function("rs256_cold", |b| {
        b.iter(|| {
            auth_nocache
                .verify_jwt(rs_cold, black_box(&rs_token))
                .expect("valid")
        })
    });
    g.bench_function("rs256_cached", |b| {
        b.iter(|| auth.verify_jwt(rs, black_box(&rs_token)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
