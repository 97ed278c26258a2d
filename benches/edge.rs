//! Per-request cost of the edge decisions (issue 19): the ip rule scan, the CORS origin
//! match / preflight answer, on policies of realistic size, and the cache hit path (key,
//! lookup, freshness, the answer's head; with and without compressing the stored body).
//! Run: `cargo bench --bench edge`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::time::Instant;
use tollgate::config::edge::{
    CacheConfig, CacheStoreConfig, CompressConfig, CorsConfig, IpRulesConfig,
};
use tollgate::edge::cache::{hit_response, store::Store, Begin, RouteCache, Upstream};
use tollgate::edge::compress::Compress;
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

/// A route cache holding one ~1.3 KB JSON response for `GET /orders/7?expand=items`, among
/// 10,000 other entries.
fn filled_cache(rt: &tokio::runtime::Runtime) -> (RouteCache, RequestHeader) {
    let store = Store::new(
        &serde_yaml::from_str::<CacheStoreConfig>("{max_size: 64MiB}").expect("store config"),
    );
    let cfg: CacheConfig = serde_yaml::from_str("{ttl: 10m, vary: [Accept]}").expect("cache");
    let cache = RouteCache::new("orders", &cfg, store, true);
    let body = Bytes::from(format!(
        "{{\"items\":[{}]}}",
        (0..20)
            .map(|i| format!("{{\"id\":{i},\"sku\":\"SKU-{i:04}\",\"qty\":{i},\"note\":\"n\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let mut head = ResponseHeader::build(200, None).expect("head");
    head.insert_header("content-type", "application/json")
        .expect("header");
    head.insert_header("etag", "\"o7\"").expect("header");
    let request = |path: &str| {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
        r.insert_header("host", "api.example.com").expect("host");
        r.insert_header("accept", "application/json")
            .expect("accept");
        r.insert_header("user-agent", "bench/1.0").expect("ua");
        r
    };
    for i in 0..10_001 {
        let path = if i == 0 {
            "/orders/7?expand=items".to_string()
        } else {
            format!("/orders/{i}")
        };
        let req = request(&path);
        let Begin::Forward(mut x) =
            rt.block_on(cache.begin(&req, req.uri.path(), &Upstream::anonymous(), 0))
        else {
            panic!("cold cache");
        };
        x.on_response_head(&cache, &head);
        x.on_body(&cache, Some(&body), true, &req.headers);
    }
    (cache, request("/orders/7?expand=items"))
}

fn bench_cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (cache, req) = filled_cache(&rt);
    let compress = Compress::new(
        &serde_yaml::from_str::<CompressConfig>("{types: [application/json], min_size: 256}")
            .expect("compress"),
    );
    let mut g = c.benchmark_group("edge_cache");
    g.bench_function("key", |b| {
        b.iter(|| black_box(cache.key(black_box(&req), "/orders/7", &Upstream::anonymous(), 0)))
    });
    let hit = |req: &RequestHeader| {
        let Begin::Hit(stored) =
            rt.block_on(cache.begin(req, "/orders/7", &Upstream::anonymous(), 0))
        else {
            panic!("stored");
        };
        hit_response(&stored.stored, req, Instant::now()).expect("answer")
    };
    g.bench_function("hit_identity", |b| {
        b.iter(|| black_box(hit(black_box(&req))))
    });
    let mut gzip_req = req.clone();
    gzip_req
        .insert_header("accept-encoding", "gzip")
        .expect("header");
    // The first gzip hit encodes and keeps the result; later ones reuse it.
    g.bench_function("hit_gzip_1300_bytes", |b| {
        b.iter(|| {
            let req = black_box(&gzip_req);
            let Begin::Hit(hit) =
                rt.block_on(cache.begin(req, "/orders/7", &Upstream::anonymous(), 0))
            else {
                panic!("stored");
            };
            let (mut head, _) = hit_response(&hit.stored, req, Instant::now()).expect("answer");
            let coding = compress
                .choose(false, Some("gzip"), &mut head)
                .expect("head");
            let body = cache
                .encoded_body(&hit, coding.expect("gzip"))
                .expect("encode");
            black_box((head, body))
        })
    });
    // What every gzip hit would cost if the encoding were not kept.
    g.bench_function("gzip_1300_bytes_each_time", |b| {
        b.iter(|| {
            let (mut head, mut body) = hit(black_box(&gzip_req));
            let accept = Some("gzip");
            if let Some(mut enc) = compress
                .on_response_head(false, accept, &mut head)
                .expect("head")
            {
                enc.on_body(&mut body, true).expect("encode");
            }
            black_box((head, body))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_cache);
criterion_main!(benches);
