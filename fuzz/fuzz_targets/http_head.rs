#![no_main]
//! Invariants live in `tollgate::fuzz_entry::http_head`, shared with the corpus replay test.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz_entry::http_head(data));
