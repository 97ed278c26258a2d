//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and saved crash inputs
//! (`fuzz/regressions/<target>/`) through the same `tollgate::fuzz_entry` functions the
//! cargo-fuzz targets call, so every input the fuzzers found interesting stays a regression test
//! under a plain `cargo test` on stable. See fuzz/README.md.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&root.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is missing or empty: the corpus is part of the test suite"
    );
    let regressions = files(&root.join("regressions").join(target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failures.push(
                path.strip_prefix(&root)
                    .unwrap_or(path)
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs panicked (messages above): {failures:#?}",
        failures.len(),
        corpus.len() + regressions.len()
    );
}

#[test]
fn normalize_path_corpus() {
    replay("normalize_path", tollgate::fuzz_entry::normalize_path);
}

#[test]
fn json_strip_corpus() {
    replay("json_strip", tollgate::fuzz_entry::json_strip);
}

#[test]
fn jwt_header_corpus() {
    replay("jwt_header", tollgate::fuzz_entry::jwt_header);
}

#[test]
fn config_load_corpus() {
    replay("config_load", tollgate::fuzz_entry::config_load);
}

#[test]
fn http_head_corpus() {
    replay("http_head", tollgate::fuzz_entry::http_head);
}
