//! Per-request limiter cost (issue 4): peek + decision + record for one key, and a spread of
//! keys. Run: `cargo bench --bench rate_limit`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::net::{IpAddr, Ipv4Addr};
use tollgate::config::rate_limit::RateLimitConfig;
use tollgate::rate_limit::key::KeyValue;
use tollgate::rate_limit::Limit;

fn bench(c: &mut Criterion) {
    let cfg: RateLimitConfig =
        serde_yaml::from_str("{key: client_ip, requests: 1000000000, per: 1m}").expect("config");
    let limit = Limit::new("bench", &cfg).expect("limit");
    let mut g = c.benchmark_group("rate_limit");
    let one = KeyValue::Ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    g.bench_function("check_one_key", |b| {
        b.iter(|| black_box(limit.check(black_box(&one))))
    });
    let mut i = 0u32;
    g.bench_function("check_many_keys", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let k = KeyValue::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i & 0xffff))));
            black_box(limit.check(&k))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
