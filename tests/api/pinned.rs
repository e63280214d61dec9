//! Artifacts pinned by digest: the same model and job give the same bytes, release after
//! release. A refactor of the pipeline, the encoders or the writers must leave these unchanged
//! (and an intended format change updates them in the same commit, saying why).

use serde_json::{json, Value};

use quantd::quant::kernels::{self, KernelChoice};

use crate::helpers::spawn_app_with;

/// (scheme, options, format, sha256 of the primary file) for the digits MLP fixture.
const PINNED: &[(&str, &str, &str, &str)] = &[
    (
        "int8",
        "{}",
        "safetensors",
        "d293a834205433d128dc75f8fcfd5b915de6464e9754e3c5623e0f14753c3663",
    ),
    (
        "int8",
        r#"{"granularity": "tensor", "symmetric": false}"#,
        "safetensors",
        "c94bdc94b6dfe415194c73fba3d17130115304c0b2092653b7aa90c5040e9c2e",
    ),
    (
        "int4",
        r#"{"group_size": 32}"#,
        "safetensors",
        "eb49ff32a74fdef7bf2a7e6882aa1c9e97b0f0ba26e04f83f192481ff83abe02",
    ),
    (
        "fp8",
        "{}",
        "safetensors",
        "d93156f68480e057dd87d4d38ec6d176da2b378316ef772c636905ea85976190",
    ),
    (
        "nf4",
        r#"{"double_quant": true}"#,
        "safetensors",
        "ed9f9a2153fedfc518556be7373694b95a9066036085a6a7d1f53fa3dfcb883c",
    ),
    (
        "q8_0",
        "{}",
        "gguf",
        "a4d7d559db76521c034bf1a63e98f9615ece08ae289aabba3b66a315f9e110ae",
    ),
    (
        "q4_1",
        "{}",
        "gguf",
        "901dfacb7a7314e99f59f6fad6f48519b80307ca65a0f6d8add0d623ce53d0c2",
    ),
    (
        "binary",
        "{}",
        "safetensors",
        "e4df23ecc4cef54284c477affbb88fd5ca9f2e2aae0aff1c1191c0f525ca3841",
    ),
    (
        "ternary",
        "{}",
        "safetensors",
        "dc314b10aec18ab4b08ead4856ec30c29451f988d67da4fa367a0fd3e2783dde",
    ),
    (
        "kmeans",
        "{}",
        "safetensors",
        "ff7049dd01e460210bb3dfb7be1ea3f26441834e8d16b4a65a8ac7747cb4c2be",
    ),
    (
        "int4",
        "{}",
        "dequantized",
        "41b533af9f892c16d7d8228da814b6cb3289979e0b20511cca97cdd929d67e9a",
    ),
];

#[tokio::test]
async fn artifacts_are_byte_identical_to_their_pinned_digests_on_every_isa() {
    // The scalar kernels define the bytes; every SIMD table must give the same ones.
    let mut choices = vec![KernelChoice::Scalar];
    choices.extend(
        kernels::available()
            .iter()
            .map(|isa| KernelChoice::from(*isa)),
    );
    choices.dedup();
    for choice in choices {
        check_pinned(choice).await;
    }
}

async fn check_pinned(choice: KernelChoice) {
    let app = spawn_app_with(|s| s.kernels = choice).await;
    let model = app.upload_digits().await;
    let model_id = model["id"].as_str().unwrap();
    let mut mismatches = Vec::new();
    for (scheme, options, format, expected) in PINNED {
        let options: Value = serde_json::from_str(options).unwrap();
        let artifact = app
            .run_job(json!({"model_id": model_id, "scheme": scheme, "options": options, "format": format}))
            .await;
        let actual = artifact["sha256"].as_str().unwrap();
        if actual != *expected {
            mismatches.push(format!("({scheme:?}, {options}, {format:?}, {actual:?})"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "artifacts changed with kernels {choice:?}:\n{}",
        mismatches.join("\n")
    );
    app.stop().await;
}
