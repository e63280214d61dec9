//! The dispatch API and the type table: choosing tables, ids, sizes, length checks.

use super::super::*;
use super::BLOCK_TYPES;

#[test]
fn select_scalar_and_auto() {
    let table = select(KernelChoice::Scalar).unwrap();
    assert_eq!(table.isa, Isa::Scalar);
    assert!(std::ptr::eq(table, scalar()));
    let best = *available().last().unwrap();
    assert_eq!(select(KernelChoice::Auto).unwrap().isa, best);
    assert_eq!(available().first(), Some(&Isa::Scalar));
    assert_eq!(format!("{table:?}"), "GgmlKernels { isa: Scalar, .. }");
}

#[test]
fn unavailable_isa_is_an_error() {
    let mut rejected = 0;
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        match select(isa.into()) {
            Ok(table) => {
                assert!(available().contains(&isa));
                assert_eq!(table.isa, isa);
            }
            Err(error) => {
                assert!(!available().contains(&isa));
                assert!(
                    matches!(error, KernelError::Unavailable { requested, .. } if requested == isa)
                );
                rejected += 1;
            }
        }
    }
    // Every machine lacks at least one of them (x86 has no NEON, aarch64 no AVX).
    assert!(rejected >= 1);
}

#[test]
fn type_table_matches_ggml() {
    let expected = [
        (GgmlType::F32, 0, 1, 4, "f32"),
        (GgmlType::F16, 1, 1, 2, "f16"),
        (GgmlType::Q4_0, 2, 32, 18, "q4_0"),
        (GgmlType::Q4_1, 3, 32, 20, "q4_1"),
        (GgmlType::Q5_0, 6, 32, 22, "q5_0"),
        (GgmlType::Q5_1, 7, 32, 24, "q5_1"),
        (GgmlType::Q8_0, 8, 32, 34, "q8_0"),
        (GgmlType::Q4K, 12, 256, 144, "q4_k"),
        (GgmlType::Q6K, 14, 256, 210, "q6_k"),
    ];
    for (ty, id, block_size, type_size, name) in expected {
        assert_eq!(ty.id(), id);
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!(ty.block_size(), block_size);
        assert_eq!(ty.type_size(), type_size);
        assert_eq!(ty.name(), name);
        assert_eq!(ty.to_string(), name);
        assert_eq!(ty.is_block_quantized(), block_size > 1);
    }
    assert_eq!(GgmlType::ALL.len(), expected.len());
    for unknown in [4, 5, 9, 10, 11, 13, 15, 30, u32::MAX] {
        assert_eq!(GgmlType::from_id(unknown), None);
    }
}

#[test]
fn row_bytes_requires_whole_blocks() {
    assert_eq!(GgmlType::Q8_0.row_bytes(0), Some(0));
    assert_eq!(GgmlType::Q8_0.row_bytes(4096), Some(128 * 34));
    assert_eq!(GgmlType::Q4_0.row_bytes(31), None);
    assert_eq!(GgmlType::Q5_1.row_bytes(33), None);
    assert_eq!(GgmlType::F16.row_bytes(7), Some(14));
    assert_eq!(GgmlType::F32.row_bytes(usize::MAX), None, "overflow");
}

#[test]
fn quantizer_exists_exactly_for_block_types() {
    for kernels in super::all_tables() {
        for ty in GgmlType::ALL {
            assert_eq!(kernels.quantizer(ty).is_some(), ty.is_block_quantized());
        }
    }
}

#[test]
#[should_panic(expected = "not a whole number of 32-element blocks")]
fn quantize_rejects_partial_blocks() {
    let mut dst = vec![0u8; 34];
    quantize(scalar(), GgmlType::Q8_0, &[0.0; 33], &mut dst);
}

#[test]
fn every_table_rejects_a_wrong_destination_length() {
    for kernels in super::all_tables() {
        for ty in BLOCK_TYPES {
            let result = std::panic::catch_unwind(|| {
                let mut dst = vec![0u8; ty.type_size() * 2 - 1];
                (kernels.quantizer(ty).unwrap())(&[0.5; 64], &mut dst);
            });
            assert!(result.is_err(), "{} {ty} accepted a short dst", kernels.isa);
        }
    }
}

#[test]
#[should_panic(expected = "src must be the bytes of 64 elements")]
fn dequantize_rejects_a_wrong_source_length() {
    let mut dst = vec![0.0f32; 64];
    dequantize(GgmlType::Q4_1, &[0u8; 41], &mut dst);
}

#[test]
#[should_panic(expected = "q6_K")]
fn k_quant_decoders_check_lengths() {
    let mut dst = vec![0.0f32; 256];
    dequantize_q6_k(&[0u8; 209], &mut dst);
}
