//! Traffic split (issue 21, DESIGN.md "Routing by headers, traffic split and mirroring")
//! through the real binary with counting backends: weights hold statistically, sticky choices
//! stay put, raising a canary moves exactly the consumers the weight table says must move, a
//! side with no healthy backend hands its share to the other with no failed request, and the
//! access log and metrics name the upstream actually chosen.

mod common;

use common::tokens::sha256_hex;
use common::*;
use tollgate::upstream::split::stable_hash;

/// 2,000 random-split requests at 90/10: the canary gets 10% ± 2.5% (150..=250; the binomial
/// standard deviation is 13.4, so the bound is ~3.7 σ). Every request succeeds, and the access
/// log's `upstream` and `tollgate_upstream_duration_seconds{upstream}` agree with the backends'
/// own hit counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_split_lands_within_bounds_and_names_the_chosen_upstream() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    match: {{path_prefix: /orders}}
    split:
      - {{upstream: v1, weight: 90}}
      - {{upstream: v2, weight: 10}}
",
        upstream_yaml("v1", &[&v1], &[]),
        upstream_yaml("v2", &[&v2], &[]),
    );
    let gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &body).await;
    let mut last_id = String::new();
    for i in 0..2000 {
        let r = gw.get(&format!("/orders/{i}"), &[]).await;
        assert_eq!(r.status, 200, "{r}");
        last_id = r.header("x-request-id").unwrap_or_default().to_string();
    }
    let (h1, h2) = (v1.hits(), v2.hits());
    assert_eq!(h1 + h2, 2000);
    assert!((150..=250).contains(&h2), "v2 got {h2} of 2000");

    gw.log_line("access.log", &last_id).await;
    let lines = json_lines(&gw.read("access.log"));
    let logged = |name: &str| lines.iter().filter(|l| l["upstream"] == name).count();
    assert_eq!((logged("v1"), logged("v2")), (h1, h2));

    let text = send(
        &gw.client,
        "GET",
        &format!("http://127.0.0.1:{}/metrics", gw.admin_port),
        &[],
    )
    .await
    .text();
    let count = |u: &str| {
        metrics::value(
            &text,
            "tollgate_upstream_duration_seconds_count",
            &[("upstream", u)],
        )
        .unwrap_or(0.0) as usize
    };
    assert_eq!((count("v1"), count("v2")), (h1, h2));
}

const KEYS: usize = 200;

fn key_of(i: usize) -> String {
    format!("key-{i:03}-secret")
}

fn consumers_yaml() -> String {
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("{{id: c{i:03}, sha256: \"{}\"}}", sha256_hex(&key_of(i))))
        .collect();
    format!(
        "auth:\n  api_keys:\n    partners:\n      header: X-API-Key\n      keys: [{}]\n",
        keys.join(", ")
    )
}

fn sticky_body(v1: &Backend, v2: &Backend, w1: u32, w2: u32) -> String {
    format!(
        "upstreams:\n{}{}\n{}routes:
  - name: orders
    match: {{path_prefix: /orders}}
    auth: {{api_key: partners}}
    split:
      - {{upstream: v1, weight: {w1}}}
      - {{upstream: v2, weight: {w2}}}
    split_by: consumer
",
        upstream_yaml("v1", &[v1], &[]),
        upstream_yaml("v2", &[v2], &[]),
        consumers_yaml(),
    )
}

/// The side each consumer lands on (by the `X-Backend` the echo backend answers with).
async fn sides(gw: &Gateway, requests_each: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = key_of(i);
        let mut seen: Option<String> = None;
        for _ in 0..requests_each {
            let r = gw.get_with("/orders/1", &[("x-api-key", &key)]).await;
            assert_eq!(r.status, 200, "{r}");
            let backend = r.echo().backend;
            match &seen {
                Some(s) => assert_eq!(s, &backend, "consumer c{i:03} changed sides"),
                None => seen = Some(backend),
            }
        }
        out.push(seen.expect("at least one request"));
    }
    out
}

/// What the weight table predicts for a consumer: the point of its stable hash laid over the
/// cumulative weights (src/upstream/split.rs).
fn predicted(i: usize, w1: u64, w2: u64) -> &'static str {
    let point = stable_hash(format!("c{i:03}").as_bytes());
    let target = ((u128::from(point) * u128::from(w1 + w2)) >> 64) as u64;
    if target < w1 {
        "v1"
    } else {
        "v2"
    }
}

/// 200 consumers × 20 requests each stay on one side; raising the canary 10% → 20% (reload)
/// moves exactly the consumers whose point lies in the 80-90% band, all of them v1 → v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_split_keeps_consumers_and_raising_the_weight_moves_only_the_band() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let gw = Gateway::start(&sticky_body(&v1, &v2, 90, 10)).await;

    let before = sides(&gw, 20).await;
    for (i, side) in before.iter().enumerate() {
        assert_eq!(side, predicted(i, 90, 10), "consumer c{i:03}");
    }
    let on_v2 = before.iter().filter(|s| *s == "v2").count();
    assert!(
        (8..=35).contains(&on_v2),
        "{on_v2} of 200 consumers on the 10% side"
    );

    gw.rewrite_config(&[], &sticky_body(&v1, &v2, 80, 20));
    gw.reload_to(2).await;
    let after = sides(&gw, 3).await;
    let mut moved = 0;
    for i in 0..KEYS {
        assert_eq!(after[i], predicted(i, 80, 20), "consumer c{i:03}");
        if before[i] != after[i] {
            assert_eq!(
                (before[i].as_str(), after[i].as_str()),
                ("v1", "v2"),
                "c{i:03}"
            );
            moved += 1;
        }
    }
    assert!(moved > 0 && moved < 50, "moved {moved} of 200");
}

/// `split_by: header:<Name>`: the same header value always lands on the same side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_split_is_sticky() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    split: [{{upstream: v1, weight: 1}}, {{upstream: v2, weight: 1}}]
    split_by: header:X-Session
",
        upstream_yaml("v1", &[&v1], &[]),
        upstream_yaml("v2", &[&v2], &[]),
    );
    let gw = Gateway::start(&body).await;
    let mut sides = std::collections::BTreeSet::new();
    for s in 0..20 {
        let session = format!("s{s}");
        let first = gw
            .get_with("/", &[("x-session", &session)])
            .await
            .echo()
            .backend;
        for _ in 0..5 {
            let again = gw
                .get_with("/", &[("x-session", &session)])
                .await
                .echo()
                .backend;
            assert_eq!(again, first, "session {session}");
        }
        sides.insert(first);
    }
    assert_eq!(
        sides.len(),
        2,
        "20 sessions at 50/50 all on one side: {sides:?}"
    );
}

/// `split_by: client_ip` (here from a trusted proxy's `X-Forwarded-For`): each address stays
/// on the side its stable hash predicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_split_is_sticky_and_predictable() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    split: [{{upstream: v1, weight: 70}}, {{upstream: v2, weight: 30}}]
    split_by: client_ip
",
        upstream_yaml("v1", &[&v1], &[]),
        upstream_yaml("v2", &[&v2], &[]),
    );
    let gw = Gateway::start_with(&["trusted_proxies: [\"127.0.0.1/32\"]"], &body).await;
    for i in 0..50u8 {
        let ip = std::net::Ipv4Addr::new(10, 0, i, 7);
        let point = stable_hash(&ip.octets());
        let want = if ((u128::from(point) * 100) >> 64) < 70 {
            "v1"
        } else {
            "v2"
        };
        for _ in 0..4 {
            let r = gw
                .get_with("/", &[("x-forwarded-for", &ip.to_string())])
                .await;
            assert_eq!(r.echo().backend, want, "client {ip}");
        }
    }
}

/// The canary's only backend goes down: once health checks see it, every request goes to v1
/// (no failed request), counted in `tollgate_split_fallback_total` and logged as
/// `split_fallback`. It comes back: it gets its share again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_without_healthy_backends_gives_its_share_to_the_other() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let body = format!(
        "upstreams:\n{}{}\nroutes:
  - name: orders
    split: [{{upstream: v1, weight: 50}}, {{upstream: v2, weight: 50}}]
",
        upstream_yaml("v1", &[&v1], &[FAST_HEALTH]),
        upstream_yaml("v2", &[&v2], &[FAST_HEALTH]),
    );
    let gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &body).await;
    v2.set_healthy(false);
    let admin = gw.admin_port;
    metrics::scrape_until(&gw.client, admin, "v2 unhealthy", |m| {
        m.value(
            "tollgate_upstream_backend_healthy",
            &[("upstream", "v2"), ("backend", &v2.addr())],
        ) == Some(0.0)
    })
    .await;
    let v1_before = v1.hits();
    let mut last_id = String::new();
    for i in 0..200 {
        let r = gw.get(&format!("/x/{i}"), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {r}");
        last_id = r.header("x-request-id").unwrap_or_default().to_string();
    }
    assert_eq!(v1.hits() - v1_before, 200);
    let (_, m) = metrics::scrape_until(&gw.client, admin, "fallbacks", |m| {
        m.value("tollgate_split_fallback_total", &[("route", "orders")])
            .is_some()
    })
    .await;
    let fallbacks = m
        .value("tollgate_split_fallback_total", &[("route", "orders")])
        .unwrap_or(0.0);
    assert!(
        (50.0..=150.0).contains(&fallbacks),
        "{fallbacks} fallbacks of 200 at 50/50"
    );
    gw.log_line("access.log", &last_id).await;
    let lines = json_lines(&gw.read("access.log"));
    assert!(lines
        .iter()
        .any(|l| l["error"] == "split_fallback" && l["upstream"] == "v1"));

    v2.set_healthy(true);
    metrics::scrape_until(&gw.client, admin, "v2 healthy", |m| {
        m.value(
            "tollgate_upstream_backend_healthy",
            &[("upstream", "v2"), ("backend", &v2.addr())],
        ) == Some(1.0)
    })
    .await;
    let v2_before = v2.hits();
    for i in 0..100 {
        assert_eq!(gw.get(&format!("/y/{i}"), &[]).await.status, 200);
    }
    assert!(v2.hits() - v2_before > 10, "v2 never got its share back");
}

const CHECK_BASE: &str = concat!(
    check_server_section!(),
    "upstreams:\n  v1:\n    backends: [\"127.0.0.1:4001\"]\n"
);

#[test]
fn check_refuses_dangling_sides_zero_weights_and_both_forms() {
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: a\n    split: [{{upstream: v1, weight: 9}}, {{upstream: v3, weight: 1}}]\n"
    );
    assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].split[1].upstream",
        &["no upstream named \"v3\""],
    );
    let yaml =
        format!("{CHECK_BASE}routes:\n  - name: a\n    split: [{{upstream: v1, weight: 0}}]\n");
    assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].split",
        &["weights sum to zero"],
    );
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: a\n    upstream: v1\n    split: [{{upstream: v1, weight: 1}}]\n"
    );
    assert_check_rejects_with(&yaml, &[], "error: routes[0]", &["mutually exclusive"]);
    let yaml = format!(
        "{CHECK_BASE}routes:\n  - name: a\n    split: [{{upstream: v1, weight: 1}}]\n    split_by: cookie\n"
    );
    assert_check_rejects_with(
        &yaml,
        &[],
        "error: routes[0].split_by",
        &["unknown split_by"],
    );
}
