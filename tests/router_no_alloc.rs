//! Issue 2: route matching must not allocate per request. A counting global allocator makes
//! this an exact, deterministic check rather than a timing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tollgate::config::Config;
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

#[test]
fn lookup_of_a_clean_path_allocates_nothing() {
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
