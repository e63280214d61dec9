//! Every quantizer table usable on this CPU against the scalar reference, on edge-case blocks
//! and random inputs; the scalar reference against hand-computed bytes, gguf-py's bytes and
//! ggml's fixture; the dispatch API.

use proptest::prelude::*;

use super::*;

mod dispatch;
mod fixtures;
mod gguf_py;
mod reference;

/// The five legacy block types, with a quantizer per ISA (the K-quants have only their scalar
/// reference, checked against llama.cpp itself by `tests/api/ggml_oracle.rs`).
const BLOCK_TYPES: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

/// Every table this CPU can run, scalar included (it must agree with itself too).
fn all_tables() -> Vec<&'static GgmlKernels> {
    available()
        .into_iter()
        .map(|isa| select(isa.into()).expect("available ISAs are selectable"))
        .collect()
}

/// The scalar reference's bytes for `src`.
fn scalar_bytes(ty: GgmlType, src: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; ty.row_bytes(src.len()).expect("whole blocks")];
    quantize(scalar(), ty, src, &mut bytes);
    bytes
}

/// Runs every table on `src` for `ty` and compares with the scalar bytes. The destination sits
/// inside a guarded buffer at an odd offset and the source is misaligned, so an out-of-bounds
/// store or an alignment assumption shows up.
fn check_type(ty: GgmlType, src: &[f32]) {
    const GUARD: usize = 64;
    let expected = scalar_bytes(ty, src);
    let mut shifted_src = vec![0.0f32; src.len() + 1];
    shifted_src[1..].copy_from_slice(src);
    let misalignment = [1, 3, 17, 40][src.len() / QK % 4];
    for kernels in all_tables() {
        let mut buffer = vec![0xa5u8; expected.len() + 2 * GUARD + misalignment];
        let start = GUARD + misalignment;
        let end = start + expected.len();
        quantize(kernels, ty, &shifted_src[1..], &mut buffer[start..end]);
        let actual = &buffer[start..end];
        if let Some(byte_idx) = (0..actual.len()).find(|&idx| actual[idx] != expected[idx]) {
            let block_idx = byte_idx / ty.type_size();
            panic!(
                "{} {ty}: byte {byte_idx} (block {block_idx}) is {:#04x}, scalar gives {:#04x}; \
                 block input {:?}",
                kernels.isa,
                actual[byte_idx],
                expected[byte_idx],
                &src[block_idx * QK..(block_idx + 1) * QK]
            );
        }
        assert!(
            buffer[..start]
                .iter()
                .chain(&buffer[end..])
                .all(|&byte| byte == 0xa5),
            "{} {ty}: wrote outside dst",
            kernels.isa
        );
    }
}

/// All five block types on one input.
fn check_all_types(src: &[f32]) {
    for ty in BLOCK_TYPES {
        check_type(ty, src);
    }
}

/// SplitMix64: a small deterministic generator for building test blocks.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform integer in `low..high`.
    fn int(&mut self, low: i32, high: i32) -> i32 {
        low + (self.next_u64() % (high - low) as u64) as i32
    }

    fn index(&mut self) -> usize {
        (self.next_u64() % QK as u64) as usize
    }

    fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// `2^exponent` exactly, subnormal powers included (`-149..=127`).
fn pow2(exponent: i32) -> f32 {
    if exponent >= -126 {
        f32::from_bits(((exponent + 127) as u32) << 23)
    } else {
        f32::from_bits(1 << (exponent + 149))
    }
}

/// Number of block kinds [`make_block`] knows.
const BLOCK_KINDS: u8 = 11;

/// One finite block of a given kind; `exponent` picks the scale where the kind has one.
///
/// The kinds aim at the places where SIMD and scalar could part: exact rounding ties after
/// scaling for each formula, ±0 and all-zero blocks, subnormal blocks (whose `1 / d`
/// overflows), huge blocks (whose `max - min` overflows), `+a`/`-a` ties for the signed
/// maximum, repeated maxima, arbitrary finite bit patterns.
fn make_block(kind: u8, seed: u64, exponent: i32) -> [f32; QK] {
    let mut rng = SplitMix(seed);
    let scale = pow2(exponent.clamp(-100, 100));
    let mut block = [0.0f32; QK];
    match kind % BLOCK_KINDS {
        // Uniform values over a wide range of magnitudes.
        0 => {
            let scale = pow2(exponent.clamp(-149, 127));
            block
                .iter_mut()
                .for_each(|value| *value = rng.unit() * scale);
        }
        // Q8_0 ties: absmax 127 s, so x * id = k + 0.5 exactly.
        1 => {
            for value in &mut block {
                *value = (rng.int(-127, 127) as f32 + 0.5) * scale;
            }
            block[rng.index()] = rng.sign() * 127.0 * scale;
        }
        // Q4_0 / Q5_0 ties: signed max ±8 s or ±16 s, others on half steps of s.
        2 | 3 => {
            let steps = if kind % BLOCK_KINDS == 2 { 8 } else { 16 };
            for value in &mut block {
                *value = rng.int(-2 * steps, 2 * steps) as f32 * 0.5 * scale;
            }
            block[rng.index()] = rng.sign() * steps as f32 * scale;
        }
        // Q4_1 / Q5_1 ties: max - min = 15 s or 31 s, others min + (k + 0.5) s.
        4 => {
            let steps = if rng.next_u64() & 1 == 0 { 15 } else { 31 };
            let min = rng.int(-40, 10) as f32 * scale;
            for value in &mut block {
                *value = min + (rng.int(0, steps) as f32 + 0.5) * scale;
            }
            block[rng.index()] = min;
            block[rng.index()] = min + steps as f32 * scale;
        }
        // Zeros of both signs, sometimes one tiny non-zero.
        5 => {
            block.iter_mut().for_each(|value| *value = 0.0 * rng.sign());
            if rng.next_u64().is_multiple_of(3) {
                block[rng.index()] = rng.sign() * f32::from_bits(1);
            }
        }
        // Subnormal and near-subnormal blocks.
        6 => {
            let tiny = [1e-45f32, 1e-42, 1e-40, 1e-38, 3e-38, 2e-37][rng.int(0, 6) as usize];
            block
                .iter_mut()
                .for_each(|value| *value = rng.unit() * tiny);
        }
        // Huge values, ±f32::MAX included.
        7 => {
            block
                .iter_mut()
                .for_each(|value| *value = rng.unit() * 3.0e38);
            block[rng.index()] = f32::MAX;
            block[rng.index()] = -f32::MAX * (rng.next_u64() & 1) as f32;
        }
        // Repeated maxima of random signs.
        8 => {
            let peak = 0.9 * scale;
            block
                .iter_mut()
                .for_each(|value| *value = rng.unit() * 0.5 * scale);
            for _ in 0..rng.int(2, 6) {
                block[rng.index()] = rng.sign() * peak;
            }
        }
        // Arbitrary finite bit patterns.
        9 => {
            for value in &mut block {
                let candidate = f32::from_bits(rng.next_u64() as u32);
                *value = if candidate.is_finite() {
                    candidate
                } else {
                    0.0
                };
            }
        }
        // Non-negative with zeros of both signs (a ReLU-like block): ±0 minima.
        _ => {
            for value in &mut block {
                *value = rng.unit().max(0.0) * scale;
                if *value == 0.0 {
                    *value *= rng.sign();
                }
            }
        }
    }
    block
}

/// Concatenates blocks of every kind, `n_blocks` in all.
fn mixed_blocks(n_blocks: usize, seed: u64) -> Vec<f32> {
    (0..n_blocks)
        .flat_map(|block_idx| {
            let kind = ((block_idx as u64 + seed) % u64::from(BLOCK_KINDS)) as u8;
            let exponent = (block_idx as i32 * 7 + seed as i32) % 40 - 20;
            make_block(kind, seed * 1000 + block_idx as u64, exponent)
        })
        .collect()
}

#[test]
fn every_kind_at_every_length_up_to_three_groups() {
    // 0..=49 blocks cover empty input, short tails of both group sizes (8 and 16 blocks) and
    // several full groups followed by every tail length.
    for n_blocks in 0..=49 {
        check_all_types(&mixed_blocks(n_blocks, n_blocks as u64));
    }
}

#[test]
fn each_kind_fills_whole_groups() {
    for kind in 0..BLOCK_KINDS {
        for exponent in [-30, -3, 0, 5, 40] {
            let src: Vec<f32> = (0..37)
                .flat_map(|block_idx| make_block(kind, block_idx * 31 + 7, exponent))
                .collect();
            check_all_types(&src);
        }
    }
}

#[test]
fn q8_0_round_half_away_around_every_tie() {
    // absmax 127 makes d = 1 and id = 1 exactly, so each x is its own scaled value: every
    // half-integer tie up to 127.5 and the 8 floats on either side of it.
    let mut values = Vec::new();
    for k in 0..=127 {
        let tie = k as f32 + 0.5;
        for offset in -8i32..=8 {
            let bits = (tie.to_bits() as i32 + offset) as u32;
            values.push(f32::from_bits(bits).min(127.0));
            values.push(-f32::from_bits(bits).min(127.0));
        }
    }
    let mut src = Vec::new();
    for chunk in values.chunks(QK - 1) {
        src.push(127.0);
        src.extend_from_slice(chunk);
        src.resize(src.len().next_multiple_of(QK), 0.25);
    }
    check_type(GgmlType::Q8_0, &src);
}

#[test]
fn non_finite_input_neither_panics_nor_writes_outside() {
    for (position, poison) in [(0, f32::NAN), (13, f32::INFINITY), (31, f32::NEG_INFINITY)] {
        let mut src = mixed_blocks(40, 5);
        for block in src.chunks_exact_mut(QK).step_by(3) {
            block[position] = poison;
        }
        for ty in BLOCK_TYPES {
            let expected_len = ty.row_bytes(src.len()).unwrap();
            for kernels in all_tables() {
                let mut dst = vec![0u8; expected_len];
                quantize(kernels, ty, &src, &mut dst);
            }
        }
    }
}

/// One block description for the property test: kind, seed, exponent.
fn block_spec() -> impl Strategy<Value = (u8, u64, i32)> {
    (0..BLOCK_KINDS, any::<u64>(), -60i32..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn simd_matches_scalar_on_random_blocks(specs in prop::collection::vec(block_spec(), 0..40)) {
        let src: Vec<f32> = specs
            .iter()
            .flat_map(|&(kind, seed, exponent)| make_block(kind, seed, exponent))
            .collect();
        check_all_types(&src);
    }

    #[test]
    fn simd_matches_scalar_on_plain_random_floats(
        values in prop::collection::vec(-1.0e3f32..1.0e3, 0..20),
        n_blocks in 1usize..30,
    ) {
        // Repeat a short random pattern over many blocks: typical weights, cheap to shrink.
        let src: Vec<f32> = (0..n_blocks * QK)
            .map(|idx| values.get(idx % values.len().max(1)).copied().unwrap_or(0.0))
            .collect();
        check_all_types(&src);
    }
}
