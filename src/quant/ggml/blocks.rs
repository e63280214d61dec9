//! ggml's legacy block layouts, as `#[repr(C)]` structs with ggml's field names.
//!
//! Source of truth: `ggml/src/ggml-common.h` (the `block_q4_0` ... `block_q8_0` typedefs and
//! their `static_assert`s on `sizeof`), in ggml and llama.cpp. Every block covers [`QK`] = 32
//! consecutive elements of a row; blocks are stored back to back with no padding, so a row of
//! `n` elements is `n / 32` blocks. All multi-byte fields are little-endian in a GGUF file.
//!
//! The kernels write these layouts straight into byte slices (a row of blocks is not aligned
//! for any of these structs, whose alignment is 2 because of the `u16` scale), so the structs
//! document and pin the layout rather than being used as values on the hot path. The
//! compile-time assertions below check both the sizes and the field offsets the kernels use.
//!
//! `d` and `m` hold IEEE 754 binary16 bit patterns (`ggml_half`); `qs` holds the quants, two
//! 4-bit quants per byte for the 4- and 5-bit types (element `j` in the low nibble of byte `j`,
//! element `j + 16` in its high nibble); `qh` holds the fifth bit of the 5-bit types, bit `j`
//! of the little-endian `u32` for element `j`.

use std::mem::{offset_of, size_of};

/// Elements per block of every legacy type (`QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`).
pub const QK: usize = 32;

/// Byte offset of `d` in every legacy block: the scale comes first.
pub(crate) const D_OFFSET: usize = 0;

/// `block_q8_0`: `x[j] ≈ d * qs[j]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_0 {
    /// The scale, `absmax / 127`, as f16 bits.
    pub d: u16,
    pub qs: [i8; QK],
}

/// `block_q4_0`: `x[j] ≈ d * (q[j] - 8)` with 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_0 {
    /// The scale, `max / -8` where `max` is the signed element of largest magnitude, as f16.
    pub d: u16,
    pub qs: [u8; QK / 2],
}

/// `block_q4_1`: `x[j] ≈ d * q[j] + m` with 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_1 {
    /// The step, `(max - min) / 15`, as f16 bits.
    pub d: u16,
    /// The block minimum, as f16 bits.
    pub m: u16,
    pub qs: [u8; QK / 2],
}

/// `block_q5_0`: `x[j] ≈ d * (q[j] - 16)` with 5-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_0 {
    /// The scale, `max / -16` (signed element of largest magnitude), as f16 bits.
    pub d: u16,
    /// Fifth bits: bit `j` of the little-endian `u32` belongs to element `j`.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// `block_q5_1`: `x[j] ≈ d * q[j] + m` with 5-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_1 {
    /// The step, `(max - min) / 31`, as f16 bits.
    pub d: u16,
    /// The block minimum, as f16 bits.
    pub m: u16,
    /// Fifth bits: bit `j` of the little-endian `u32` belongs to element `j`.
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

// Sizes from the `static_assert`s of ggml-common.h.
const _: () = assert!(size_of::<BlockQ8_0>() == 2 + QK);
const _: () = assert!(size_of::<BlockQ4_0>() == 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ4_1>() == 2 * 2 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_0>() == 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ5_1>() == 2 * 2 + 4 + QK / 2);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Byte offset of `qs` in a `block_q8_0`.
pub(crate) const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
/// Byte offset of `qs` in a `block_q4_0`.
pub(crate) const Q4_0_QS: usize = offset_of!(BlockQ4_0, qs);
/// Byte offsets of `m` and `qs` in a `block_q4_1`.
pub(crate) const Q4_1_M: usize = offset_of!(BlockQ4_1, m);
pub(crate) const Q4_1_QS: usize = offset_of!(BlockQ4_1, qs);
/// Byte offsets of `qh` and `qs` in a `block_q5_0`.
pub(crate) const Q5_0_QH: usize = offset_of!(BlockQ5_0, qh);
pub(crate) const Q5_0_QS: usize = offset_of!(BlockQ5_0, qs);
/// Byte offsets of `m`, `qh` and `qs` in a `block_q5_1`.
pub(crate) const Q5_1_M: usize = offset_of!(BlockQ5_1, m);
pub(crate) const Q5_1_QH: usize = offset_of!(BlockQ5_1, qh);
pub(crate) const Q5_1_QS: usize = offset_of!(BlockQ5_1, qs);

// The kernels hard-code this packing order; the structs must agree with it.
const _: () = assert!(offset_of!(BlockQ8_0, d) == D_OFFSET && Q8_0_QS == 2);
const _: () = assert!(offset_of!(BlockQ4_0, d) == D_OFFSET && Q4_0_QS == 2);
const _: () = assert!(offset_of!(BlockQ4_1, d) == D_OFFSET && Q4_1_M == 2 && Q4_1_QS == 4);
const _: () = assert!(offset_of!(BlockQ5_0, d) == D_OFFSET && Q5_0_QH == 2 && Q5_0_QS == 6);
const _: () = assert!(offset_of!(BlockQ5_1, d) == D_OFFSET && Q5_1_M == 2);
const _: () = assert!(Q5_1_QH == 4 && Q5_1_QS == 8);
