//! Builds `src/quant` (and the `src/formats` it uses) on its own so that it can be type-checked for other architectures.
#[path = "../../../src/error.rs"]
pub mod error;
#[path = "../../../src/formats/mod.rs"]
pub mod formats;
#[path = "../../../src/quant/mod.rs"]
pub mod quant;
