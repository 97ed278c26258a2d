//! Per-request cost of the edge decisions (issue 19): the ip rule scan and the CORS origin
//! match / preflight answer, on policies of realistic size. Run: `cargo bench --bench edge`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::net::IpAddr;
use tollgate::config::edge::{CorsConfig, IpRulesConfig};
use tollgate::edge::cors::Cors;
use tollgate::edge::ip_rules::IpRules;

fn ip_rules() -> IpRules {
    // 20 allowed networks (v4 and v6), 10 denied hosts: a busy office-and-VPN allow list.
    let mut allow: Vec<String> = (0..10).map(|i| format!("10.{i}.0.0/16")).collect();
    allow.extend((0..10).map(|i| format!("2001:db8:{i:x}::/48")));
    let deny = (0..10).map(|i| format!("10.{i}.9.9")).collect();
    IpRules::build(&IpRulesConfig { allow, deny }, "bench.ip").expect("valid rules")
}

fn cors() -> Cors {
    let cfg: CorsConfig = serde_yaml::from_str(
        "{allow_origins: [\"https://app.example.com\", \"https://admin.example.com\", \"https://*.example.org\", \"https://*.example.com\"], allow_methods: [GET, POST, PUT, DELETE], allow_headers: [Authorization, Content-Type, X-Request-Id], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m}",
    )
    .expect("cors config");
    Cors::new(&cfg)
}

fn bench(c: &mut Criterion) {
    let rules = ip_rules();
    let mut g = c.benchmark_group("edge_ip");
    let allowed: IpAddr = "10.9.1.1".parse().expect("ip");
    let refused: IpAddr = "192.168.1.1".parse().expect("ip");
    let v6: IpAddr = "2001:db8:9::1".parse().expect("ip");
    g.bench_function("allowed_v4_last_net", |b| {
        b.iter(|| black_box(rules.permits(black_box(Some(allowed)))))
    });
    g.bench_function("refused_v4_full_scan", |b| {
        b.iter(|| black_box(rules.permits(black_box(Some(refused)))))
    });
    g.bench_function("allowed_v6", |b| {
        b.iter(|| black_box(rules.permits(black_box(Some(v6)))))
    });
    g.finish();

    let cors = cors();
    let mut g = c.benchmark_group("edge_cors");
    g.bench_function("actual_subdomain_origin", |b| {
        b.iter(|| black_box(cors.actual(black_box(Some("https://shop.eu.example.com")))))
    });
    g.bench_function("actual_refused_origin", |b| {
        b.iter(|| black_box(cors.actual(black_box(Some("https://evil.example.net")))))
    });
    g.bench_function("preflight_allowed", |b| {
        b.iter(|| {
            black_box(cors.preflight(
                black_box("https://app.example.com"),
                black_box("PUT"),
                black_box(Some("authorization, content-type")),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
