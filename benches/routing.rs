//! Route lookup cost with 1,000 routes (issue 2): normalisation + table lookup per request.
//! Run: `cargo bench --bench routing`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::config::Config;
use tollgate::routing::conditions::RequestView;
use tollgate::routing::normalize::normalize;
use tollgate::routing::Router;

fn thousand_routes() -> Config {
    let mut yaml = String::from("upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n");
    for i in 0..1000 {
        let host = match i % 3 {
            0 => String::new(),
            1 => format!(", host: api{}.example.com", i % 10),
            _ => ", host: \"*.example.com\"".to_string(),
        };
        yaml.push_str(&format!(
            "  - {{name: r{i}, upstream: u, match: {{path_prefix: /svc{}/v{}/res{i}{host}, methods: [GET, POST]}}}}\n",
            i % 50,
            i % 4
        ));
    }
    yaml.push_str("  - {name: root, upstream: u}\n");
    Config::load_str(&yaml).expect("bench config is valid")
}

/// 1,000 routes with header/query conditions (issue 21): four versions of 250 prefixes, each
/// version selected by `X-Api-Version` (exact, prefix or regex) or a `beta` query flag, plus a
/// fallback without conditions per prefix.
fn thousand_conditional_routes() -> Config {
    let mut yaml = String::from("upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n");
    for i in 0..1000 {
        let prefix = format!("/svc{}/res{}", i % 25, i / 4);
        let cond = match i % 4 {
            0 => "headers: {X-Api-Version: \"2\"}".to_string(),
            1 => "headers: {Accept: {prefix: \"application/vnd.acme.v3\"}}".to_string(),
            2 => "headers: {X-Tenant: {regex: \"^t-[0-9]+$\"}}, query: {beta: \"1\"}".to_string(),
            _ => String::new(),
        };
        let sep = if cond.is_empty() { "" } else { ", " };
        yaml.push_str(&format!(
            "  - {{name: c{i}, upstream: u, match: {{path_prefix: {prefix}{sep}{cond}}}}}\n"
        ));
    }
    Config::load_str(&yaml).expect("bench config is valid")
}

fn bench_conditions(c: &mut Criterion) {
    let config = thousand_conditional_routes();
    let router = Router::new(&config.routes);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "t-42".parse().expect("value"));
    headers.insert("accept", "application/json".parse().expect("value"));
    let mut g = c.benchmark_group("route_lookup_1000_conditional_routes");
    g.bench_function("regex_and_query_hit", |b| {
        let view = RequestView {
            headers: Some(&headers),
            query: Some("x=1&beta=1"),
        };
        b.iter(|| {
            let p = normalize(black_box("/svc22/res241/items/42"), false).expect("valid");
            black_box(router.lookup_request("h", p.route(), b"GET", black_box(&view)))
        })
    });
    g.bench_function("conditions_fail_to_fallback", |b| {
        let view = RequestView {
            headers: Some(&headers),
            query: None,
        };
        b.iter(|| {
            let p = normalize(black_box("/svc22/res241/items/42"), false).expect("valid");
            black_box(router.lookup_request("h", p.route(), b"GET", black_box(&view)))
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let config = thousand_routes();
    let router = Router::new(&config.routes);
    let mut g = c.benchmark_group("route_lookup_1000_routes");
    g.bench_function("deep_hit", |b| {
        b.iter(|| {
            let p = normalize(black_box("/svc17/v3/res967/items/42"), false).expect("valid");
            black_box(router.lookup(black_box("a.example.com"), p.route(), b"GET"))
        })
    });
    g.bench_function("miss_to_root", |b| {
        b.iter(|| {
            let p = normalize(black_box("/nothing/here/at/all"), false).expect("valid");
            black_box(router.lookup(black_box("api.example.com"), p.route(), b"GET"))
        })
    });
    g.bench_function("method_not_allowed", |b| {
        b.iter(|| black_box(router.lookup("x", black_box("/svc0/v0/res0/1"), b"DELETE")))
    });
    g.bench_function("normalize_dirty_path", |b| {
        b.iter(|| {
            black_box(normalize(black_box("//svc1/./v1/%2e%2e/v1/res1"), false).expect("valid"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_conditions);
criterion_main!(benches);
