//! Holder of switchboard's shared examples, benchmarks and cross-broker tests.
//! The library itself is the `switchboard` crate under `crates/`.
