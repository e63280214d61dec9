//! Model math for serving: architectures that run directly on (possibly quantized) weights.
//! Pure code, like `quant` and `formats`: the serving layer loads weights and runs these on the
//! worker pool.

pub mod bert;
pub mod fastmath;
pub mod kernels;
pub mod matrix;
pub mod mlp;
pub mod tokenize;
