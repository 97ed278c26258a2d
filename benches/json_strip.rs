//! Streaming JSON stripping throughput (issue 5): remove 3 fields from 1 KB, 100 KB and 5 MB
//! bodies fed in 16 KiB chunks, as Pingora delivers them. Run: `cargo bench --bench json_strip`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use std::sync::Arc;
use tollgate::response_json::paths::{Mode, Rules};
use tollgate::response_json::strip::JsonStripper;

/// An order-like document of about `target` bytes.
fn document(target: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut doc = json!({"id": 7, "status": "shipped", "total": 42.5, "internal_cost": 31.2,
                         "debug": {"sql": "select * from orders where id = 7", "ms": 3}, "items": []});
    let mut i = 0;
    while serde_json::to_vec(&doc).map(|v| v.len()).unwrap_or(0) < target {
        for _ in 0..16 {
            items.push(
                json!({"sku": format!("SKU-{i:06}"), "qty": i % 7, "price": 9.99,
                              "name": "A reasonably long product name, with \"quotes\" and é",
                              "supplier_id": format!("sup-{i}")}),
            );
            i += 1;
        }
        doc["items"] = json!(items.clone());
    }
    serde_json::to_vec(&doc).expect("serialise")
}

fn bench(c: &mut Criterion) {
    let rules = Arc::new(
        Rules::compile(
            Mode::Remove,
            &["internal_cost", "debug", "items[].supplier_id"],
        )
        .expect("rules"),
    );
    let mut g = c.benchmark_group("json_strip_remove_3_fields");
    for (label, size) in [("1KB", 1_000), ("100KB", 100_000), ("5MB", 5_000_000)] {
        let doc = document(size);
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_function(label, |b| {
            let mut out = Vec::with_capacity(doc.len());
            b.iter(|| {
                out.clear();
                let mut s = JsonStripper::new(rules.clone());
                for chunk in doc.chunks(16 * 1024) {
                    s.feed(black_box(chunk), &mut out).expect("valid");
                }
                s.finish(&mut out).expect("complete");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
