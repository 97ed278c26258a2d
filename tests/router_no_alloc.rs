//! Issue 2: route matching must not allocate per request. A counting global allocator makes
//! this an exact, deterministic check rather than a timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tollgate::config::Config;
use tollgate::routing::conditions::RequestView;
use tollgate::routing::normalize::normalize;
use tollgate::routing::{Match, Router};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: tests run one at a time so none counts another's allocations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn lookup_of_a_clean_path_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut yaml = String::from("upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - {{name: r{i}, upstream: u, match: {{host: \"*.example.com\", path_prefix: /s{}/r{i}, methods: [GET]}}}}\n",
            i % 20
        ));
    }
    let config = Config::load_str(&yaml).expect("valid");
    let router = Router::new(&config.routes);

    let before = ALLOCS.load(Ordering::SeqCst);
    let mut found = 0;
    for _ in 0..100 {
        let p = normalize("/s7/r967/items/3", false).expect("valid path");
        if let Match::Found(i) = router.lookup("api.example.com", p.route(), b"GET") {
            found += i;
        }
        assert_eq!(
            router.lookup("other.org", p.route(), b"GET"),
            Match::NotFound
        );
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(found, 967 * 100, "the deep route must win every time");
    assert_eq!(after - before, 0, "route lookups allocated");
}

/// Issue 21: a table with header/query conditions still routes without allocating when the
/// query needs no decoding (exact, prefix and regex forms; regexes compiled once at start).
#[test]
fn lookup_with_conditions_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut yaml = String::from("upstreams:\n  u:\n    backends: [\"127.0.0.1:1\"]\nroutes:\n");
    for i in 0..300 {
        let cond = match i % 3 {
            0 => "headers: {X-Api-Version: \"2\"}",
            1 => "headers: {Accept: {prefix: application/vnd}}",
            _ => "headers: {X-Tenant: {regex: \"^t-[0-9]+$\"}}, query: {beta: \"1\"}",
        };
        yaml.push_str(&format!(
            "  - {{name: r{i}, upstream: u, match: {{path_prefix: /s/r{}, {cond}}}}}\n",
            i / 3
        ));
    }
    yaml.push_str("  - {name: plain, upstream: u, match: {path_prefix: /s}}\n");
    let config = Config::load_str(&yaml).expect("valid");
    let router = Router::new(&config.routes);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "t-7".parse().expect("value"));
    let hit = RequestView {
        headers: Some(&headers),
        query: Some("a=b&beta=1"),
    };
    let miss = RequestView {
        headers: Some(&headers),
        query: None,
    };

    // A regex allocates its matching cache on its first search in a thread, once; warm it.
    router.lookup_request("h", "/s/r66", b"GET", &hit);
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..100 {
        let p = normalize("/s/r66/items", false).expect("valid path");
        assert_eq!(
            router.lookup_request("h", p.route(), b"GET", &hit),
            Match::Found(200)
        );
        assert_eq!(
            router.lookup_request("h", p.route(), b"GET", &miss),
            Match::Found(300)
        );
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "route lookups allocated");
}
