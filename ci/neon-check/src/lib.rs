//! Builds `src/quant` on its own so that it can be type-checked for other architectures.
#[path = "../../../src/quant/mod.rs"]
pub mod quant;
