//! Response transforms: JSON field stripping (streaming) and the body decoding it needs.

pub mod json_paths;
pub mod json_strip;
pub mod response_json;

#[cfg(test)]
mod json_strip_tests;
