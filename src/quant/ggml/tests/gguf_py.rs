//! Bytes made by gguf-py (PyPI `gguf` 0.19.0, numpy 2) from 16 hand-picked blocks, checked
//! against the scalar reference and every SIMD table. No Python is needed to run this.
//!
//! The blocks (index: what it exercises): 0 Q8_0 ties at k + 0.5; 1 Q4_0/Q5_0 ties; 2 Q4_1/Q5_1
//! ties; 3 and 4 `-a` before `+a` and the reverse; 5 all zeros; 6 subnormal (1/d overflows);
//! 7 tiny normal (d subnormal); 8 huge (max - min overflows); 9 realistic weights; 10 a
//! constant block; 11 uniform with a negative extreme; 12 and 13 blocks where an FMA-built ggml
//! (and gguf-py's earlier float64 path) gives a different Q4_0 / Q5_0 quant; 14 repeated
//! maxima; 15 ±f32::MAX. They were generated with
//! `gguf.quants.quantize(x.reshape(1, -1), GGMLQuantizationType.Q8_0).tobytes().hex()` etc.
//! on the float32 input below. Blocks with a ±0 minimum mixing both zero signs are left out
//! on purpose: numpy picks that zero's sign by its SIMD reduction order, which differs
//! between CPUs (quantd follows ggml's loop: the first one).

use super::super::*;
use super::{all_tables, check_all_types, scalar_bytes};

const INPUT_F32_LE: &str = concat!(
    "0000f8bf0000e8bf0000d8bf0000c8bf0000b8bf00007e41000098bf000088bf000070bf000050bf000030bf000010bf",
    "0000e0be0000a0be000040be000080bd0000803d0000403e0000a03e0000e03e0000103f0000303f0000503f0000703f",
    "0000883f0000983f0000a83f0000b83f0000c83f0000d83f0000e83f0000f83f000080be000070be000060be000000bf",
    "000040be000030be000020be000010be000000be0000e0bd0000c0bd0000a0bd000080bd000040bd000000bd000080bc",
    "000000000000803c0000003d0000403d0000803d0000a03d0000c03d0000e03d0000003e0000103e0000203e0000303e",
    "0000403e0000503e0000603e0000703e000080bf0000003f0000c03f0000204000006040000090400000b0400000d040",
    "0000f040000008410000184100002841000038410000484100005841000000bf0000003f0000c03f0000204000006040",
    "000090400000b0400000d0400000f040000008410000184100002841000038410000484100005841000000bf00006041",
    "4c089e3eec32fc3ed922b03efa7a95be000000c04b24a53cb24d843e146c1c3eaa070b3fbca8663ebd88443e8ba960be",
    "3525aabe3401e43e0c6a703c8a4c793e266bd3be970d06beca4fc6bedb496ebe00000040d46ae3bec51224be6e43493d",
    "a55a4dbec0019bbdce4f88bdc173003e3d7b04bee746a73d8ca38b3c7c6d023e89348a3dca9efe3e9ce14bbef531b83e",
    "00000040312393be1b0aba3e270407beda29eebd444dd5be3a2421bf75db423e23fcb2bee1156f3e73f00d3f50100dbd",
    "4f0cadbe2b32f23dc4006a3e11d8a0bd000000c0fb18cd3e995fc23ef61a5a3e451485bec0e983bc5937393e9f2b82bd",
    "c3653bbe9e206bbe322742be26514ebe0000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "c07d00805e3f010030df00803bf7000068740000f5260000a5e600804f7f0080262602009e1b000008960000d4b80000",
    "452601003642008019aa00809e100080b548008069dc0000db340000b34200006c2800006b5601004397008059850080",
    "bdf60000aa1d00809964000036cb0080810600006178000009720180b8c100805156e601c30b190344b1fb01c4508080",
    "a0166682b038d501a73c2a8382dd6b8073bfb381cc650d8242ea1d031f572883a08230801f3996004570fe012003da82",
    "b30dfe81c68ccb82eaf60a815e565501511c3301139d578153794a01372141014b8adc0187ef3600f9abf282c6c85d82",
    "e825bc01b6d07782185a598249def600535faffa1d2dd77ce6b1617f628251fc8f0b5c7b990facfde3f7bffcdff88dfb",
    "4ead8ffde6b161ff0e52f27bba27f97c8200427c3ccf627dddeb377da6ba44fdd1add9fb396596fb9f95307b23e189fc",
    "86f2927cf95bb37cb07937fd2797e37c31e49bfc7e4bfe7c6eef877cac687bfb7c576f7d984ed67c45fe787a6fbdef7b",
    "09d9453d472fe83c2e999b3cd10b8d3b8969383c079e423b3bfcf9bcbe1b913c65e9073c7648ddbc367a52bc8581a2bb",
    "9975d53bdda00d3df6d8b939c5061fbd73ed543ce5545cbb77c40ebde7ea3abd8161aebcc6eaf73b417f78bc3683443c",
    "3039b8bb5ac5703b9554663c1cb33d3c5a70acbce9f21d3d1dfb21bd5f6376bb3333333f3333333f3333333f3333333f",
    "3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f",
    "3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f3333333f",
    "3333333f3333333f3333333f3333333f1b58793f631be6bcb019673fe4d61bbfa12f1ebf363fc73e1cd86e3f8460913e",
    "3deb143e98ba3a3f678fe6bee303433f37a061bf554a12bff5b71f3f3a49f43dcb892c3f0000c0bfd0a46ebfe596273e",
    "fb59973e2d2142bf7ca4663e4ac4fc3e5fcb6c3f10a1a63e12f51b3e3d9f993eec055abe03a5a93d0b32e6bdc45ada3d",
    "a88341be8c99c43f86a2c33fe388ee3d8f7a22bf1149bc3e954b893fd4eb1cbf946c833ec98929bff36f9e3fb1169f3d",
    "61de873f4637a63f930ff7be3a5ac93f3b046abe3eb935bf573eadbda500123f3447b83fa646c83f05bd1e3f737e843e",
    "ed439ebfcc8f8a3ecd562d3efd315abd1db323bf9914f4bf5ecb2abffb5d98bfe8f73bbf844497bf9169eabed2aa833f",
    "a019483fa7c0f83e1b4893bdf5c7e03fcf6a82bfc948f1beebb22a3fb5b06cbe08bac43f15a7a8bf22ecd23ec20bd6bf",
    "8c12d23fb5166e3f102d053ec2bfc93e53ac11c0ce5e0fbfcaaabfbeb867d1bfb06479be3c74ef3d437da3bee6e377bf",
    "361cb13ea83abb3ea995bc3f01c54bbef4d3d1bc6666663fa554ae3d2947913d892789bdc8800b3e6245433d6666663f",
    "9007573b239e8d3da669d13d2c7602bee1ddb2bd851731bec726343db9981c3dae1310bd7b07e1bdfce5053ed6ac233e",
    "c184213ef8c29f3b4b6f643c23bc603c8cdc5ebc3992fbbd628078bda7f7a63d0c5c9eb98e4a43bd6666663f0226333e",
    "ffff7f7fffff7fff0000803f000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
);

const EXPECTED_Q8_0: &str = concat!(
    "0030f0f1f2f3f47ff6f7f8f9fafbfcfdfeff0102030405060708090a0b0c0d0e0f10081cc0c4c881d0d4d8dce0e4e8ec",
    "f0f4f8fc0004080c1014181c2024282c3034383c0e2ff7050e172029323b444d565f68717afb050e172029323b444d56",
    "5f68717afb7f0824141f16ed8101100a220e0cf2eb1c010fe6f8e7f17fe4f603f3fbfc08f805010808240420f3177fee",
    "17f8f9e6d80cea0f23feeb080ffb8119180eefff0bfcf4f1f4f300000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "157217fdd51481fdefe67682ff0418afe8b4fa0a08f609091501a5d712d2d706007c00047ffe00f4fdfff68101040208",
    "06f9ffff00fe0303fa04fd0402ff080400013b0e7f4b320b1e08b02f16b9def3115b019a22f7a488c814d820f10a251e",
    "c96598f6a51d7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f0c2252fe4ccccc214f18",
    "0c3eda40b5d0350a3981b10e19c0132a4e1c0d19ee07f609b023f3666608d61847d711d452054756e069f1d1fa266068",
    "2911ae120bfcd581d4b19724d7bee6392c1bfc62c7e625f356b617a35c34071681e1eba5f207eeca131452f5421ffc7f",
    "0c0af713077f000a0eeef4e80605fbf0121716010202feeff70c00f97f19007c7f810000000000000000000000000000",
    "00000000000000000000000000000000",
);

const EXPECTED_Q4_0: &str = concat!(
    "f0bf89898989898089897878787878787878002c848495909595a6a6a6a6b7b7b7b7c8c800bf89787767565545443433",
    "2312110180080034697a6977f06879897a898997778a889900b498867987f0696779988a7b8799979698008088888888",
    "8888888888888888888888880080000000000000000000000000000000000000793f89989579909897862f5098585983",
    "00fc8888808888898888898f8888788788882f9e6093e5f7c678bd65977c6a69b722f89e9aad00000000000000000000",
    "0000000000000032cd083d95a54a9dbad9ac96ac73857b99a133775e8ea8e5fabd9539959d885c0d563f8d34e5b4869c",
    "0b6a782e74867a579d93d97233af889077777987888088979779898a086800fc808f8888888888888888888888888888",
);

const EXPECTED_Q4_1: &str = concat!(
    "c03cc0bf20202020202f21213131313131313132442a00b8a5b5b6b0b6c7c7c7d8d8d8e9e9e9fafa003c00bc20324354",
    "65768798a9bacbdcedfe1ff1443400c069796976f06878887a78788776898888443400c0688987790f96998777768578",
    "76787a770000000000000000000000000000000000000000000000800000000000000000000000000000000000000080",
    "693f79888579808897862f5098585983007c00fc000000000000000000000000000000006a1ed7a99f7c2a084988529a",
    "6983a59648dd177100009a3900000000000000000000000000000000473100bedf093fa5b54bafcbfabea6be84a68daa",
    "6d33a1bf775f8fb9e5fabd9639959e895d0e563f4d348dc0f6c497ac0b6a782f85977b58aea4ea82942c89b1221f4453",
    "5124333f221324412120f353007c00fc00000000000000000000000000000000",
);

const EXPECTED_Q5_0: &str = concat!(
    "f0bbdfff0f0002020202f1f0f1f1f1f1f1f1e0e0e0e000280080ffff081919202a3b3b4c4c5d5d6e6e7f7f8000bb0180",
    "0040f1efdecdbcab9a7967564534231211010030e7e790e8d2f4d3eef0c0f201e4f2f21efd14001200b0a49719fb3ffc",
    "e21df0d2dde12103f51e132e2c200080ffffffff00000000000000000000000000000000008000000000000000000000",
    "000000000000000000000000af74d893d36ef3101bf310103e0d5fb020a0b31600fcfb977fed00000000000210f001ff",
    "000ff00f0f012f9a40ce5ed1c017caff7cdf5aca2df9b4c27e35d01d9aa9000000000000000000000000000000000000",
    "0000002ee7cbd9af7a006a2a39842a53a2382b38e71af711a12f6ebdf80eeeadfd51cbd3592b622a1a01b90bac6d8d30",
    "b8540f72cb781d3705c3df5ce91de59e2b37a3f433ab1139e3371020eedfd10e0f00002f1ef202130fdf00fcfeffffff",
    "000f0000000000000000000000000000",
);

const EXPECTED_Q5_1: &str = concat!(
    "9938c0bf2000000030404041415f51525252626263637373112600b800ffffff5b6b6c708d8e9fafa0b0c1c2d2e3e4f4",
    "be3700bc807fc0bf30537597b9db0d20426486a8caec1ef1213000c0e7e790e8c2e3c2edf0c0e201e4f1f10eed030001",
    "213000c05b68e604d0031ef20f3d221edffc1bf1ede1e4ef000000000000000000000000000000000000000000000000",
    "00000080000000000000000000000000000000000000000000000080af74d893d36ff3101bf310103e0d5fb020a1b316",
    "007c00fc0000000000000000000000000000000000000000351ad7a9bf31a12e3fe845008320a535d2064b3d81ca2fe2",
    "00009a3900000000000000000000000000000000000000001c2d00bee7cbd9ffbf027e5b6b986e96e57c5d7c084c1b44",
    "2f2fa1bf6ebdfc0effbf0f62ebf47b3c633b2c12ba0dbd6f2a308dc0f85c0ff3ec982e5908d5f15f0a2ef7a04d47d505",
    "6e2889b182000040442f97a7a359565f551738715240f6a6007c00fc0000000000000000000000000000000000000000",
);

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "hex string of odd length");
    (0..hex.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(&hex[idx..idx + 2], 16).expect("hex digit"))
        .collect()
}

fn input() -> Vec<f32> {
    decode_hex(INPUT_F32_LE)
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect()
}

fn expected(ty: GgmlType) -> Vec<u8> {
    decode_hex(match ty {
        GgmlType::Q8_0 => EXPECTED_Q8_0,
        GgmlType::Q4_0 => EXPECTED_Q4_0,
        GgmlType::Q4_1 => EXPECTED_Q4_1,
        GgmlType::Q5_0 => EXPECTED_Q5_0,
        GgmlType::Q5_1 => EXPECTED_Q5_1,
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q4K | GgmlType::Q6K => {
            unreachable!("no vectors for {ty}")
        }
    })
}

#[test]
fn every_table_reproduces_gguf_py_bytes() {
    let src = input();
    assert_eq!(src.len(), 16 * QK);
    for ty in super::BLOCK_TYPES {
        let expected = expected(ty);
        for kernels in all_tables() {
            let mut actual = vec![0u8; expected.len()];
            quantize(kernels, ty, &src, &mut actual);
            for (block_idx, (got, want)) in actual
                .chunks(ty.type_size())
                .zip(expected.chunks(ty.type_size()))
                .enumerate()
            {
                assert_eq!(got, want, "{} {ty}: block {block_idx}", kernels.isa);
            }
        }
    }
    // The same blocks repeated past a group boundary, for the SIMD paths' full groups.
    let repeated: Vec<f32> = src.iter().cycle().take(3 * src.len()).copied().collect();
    check_all_types(&repeated);
}

/// Element `idx`'s quant in a Q4_0 or Q5_0 block.
fn element_quant(ty: GgmlType, block: &[u8], idx: usize) -> u8 {
    let qs = &block[if ty == GgmlType::Q4_0 { 2 } else { 6 }..];
    let low = if idx < QK / 2 {
        qs[idx] & 0x0f
    } else {
        qs[idx - QK / 2] >> 4
    };
    if ty == GgmlType::Q4_0 {
        return low;
    }
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    low | ((qh >> idx & 1) as u8) << 4
}

#[test]
fn q4_0_and_q5_0_quantize_unfused_like_gguf_py() {
    // Blocks 12 (Q4_0) and 13 (Q5_0) each hold an element whose quant differs between
    // trunc(f32(f32(x * id) + offset)), the convention of gguf 0.19.0 and of ggml built without
    // FMA, and the fused trunc(f32(x * id + offset)). We must give the unfused one.
    let src = input();
    for (ty, block_idx, divisor, offset) in [
        (GgmlType::Q4_0, 12, -8.0f32, 8.5f32),
        (GgmlType::Q5_0, 13, -16.0, 16.5),
    ] {
        let block = &src[block_idx * QK..(block_idx + 1) * QK];
        let id = scalar::inverse_or_zero(scalar::signed_absmax(block) / divisor);
        let bytes = scalar_bytes(ty, block);
        let mut disagreements = 0;
        for (idx, &value) in block.iter().enumerate() {
            let unfused = (value * id + offset).trunc();
            let fused = value.mul_add(id, offset).trunc();
            assert_eq!(
                f32::from(element_quant(ty, &bytes, idx)),
                unfused,
                "{ty} {idx}"
            );
            if unfused != fused {
                disagreements += 1;
            }
        }
        assert_eq!(
            disagreements, 1,
            "{ty}: block {block_idx} was chosen for one such element"
        );
    }
}
