//! The `config.json` side of the compressed-tensors format: the `quantization_config` block that
//! tells transformers and vLLM how to read the quantized safetensors next to it.
//!
//! Reference: neuralmagic/compressed-tensors, `src/compressed_tensors/config/base.py`
//! (`CompressionFormat`: `int-quantized`) and `quantization/quant_config.py` / `quant_args.py`
//! (`config_groups`, `QuantizationArgs` fields). The tensors themselves follow
//! `compressors/quantized_compressors/naive_quantized.py`: `<name>` holds the int8 values,
//! `<name>_scale` the scales (shape `[out, 1]` per channel, `[1]` per tensor) and
//! `<name>_zero_point` the int8 zero points when asymmetric.

use serde_json::{json, Map, Value};

/// One config group: the compression format of its modules, their weight quantization
/// arguments (`QuantizationArgs`) and the module names it targets.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigGroup {
    /// `int-quantized`, `pack-quantized` or `float-quantized`.
    pub format: &'static str,
    pub weights: Value,
    pub targets: Vec<String>,
}

/// `QuantizationArgs` of integer weights: `strategy` is `channel`, `tensor` or `group` (with
/// `group_size`).
pub fn int_weight_args(
    num_bits: u8,
    symmetric: bool,
    strategy: &str,
    group_size: Option<usize>,
) -> Value {
    json!({
        "num_bits": num_bits,
        "type": "int",
        "symmetric": symmetric,
        "strategy": strategy,
        "group_size": group_size,
        "block_structure": null,
        "dynamic": false,
        "actorder": null,
        "observer": "minmax",
        "observer_kwargs": {}
    })
}

/// `QuantizationArgs` of FP8 (E4M3) weights with a per-channel or per-tensor scale.
pub fn float_weight_args(strategy: &str) -> Value {
    json!({
        "num_bits": 8,
        "type": "float",
        "symmetric": true,
        "strategy": strategy,
        "group_size": null,
        "block_structure": null,
        "dynamic": false,
        "actorder": null,
        "observer": "minmax",
        "observer_kwargs": {}
    })
}

/// The `quantization_config` object for weight-only quantization, one config group per distinct
/// scheme, each targeting its modules by name. Each group names its own `format`; the top-level
/// `format` is the common one, or `mixed-precision` when groups differ (compressed-tensors'
/// `CompressionFormat.mixed_precision`).
pub fn quantization_config(groups: &[ConfigGroup]) -> Value {
    let formats: Vec<&str> = groups.iter().map(|g| g.format).collect();
    let format = match formats.first() {
        Some(first) if formats.iter().all(|f| f == first) => *first,
        Some(_) => "mixed-precision",
        None => "dense",
    };
    let config_groups: Map<String, Value> = groups
        .iter()
        .enumerate()
        .map(|(index, group)| {
            (
                format!("group_{index}"),
                json!({
                    "targets": group.targets,
                    "weights": group.weights,
                    "input_activations": null,
                    "output_activations": null,
                    "format": group.format,
                }),
            )
        })
        .collect();
    json!({
        "quant_method": "compressed-tensors",
        "format": format,
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": [],
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {}
    })
}

/// transformers' `BitsAndBytesConfig` for NF4 weights (`quant_method: bitsandbytes`).
/// `skip_modules` are the Linear modules kept in float.
pub fn bitsandbytes_nf4_config(double_quant: bool, skip_modules: &[String]) -> Value {
    json!({
        "quant_method": "bitsandbytes",
        "load_in_4bit": true,
        "load_in_8bit": false,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": double_quant,
        "bnb_4bit_compute_dtype": "float32",
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": skip_modules,
    })
}

/// Puts `quantization_config` into the model's own `config.json` (or a fresh object when the
/// model came without one). Returns the pretty-printed bytes.
///
/// Fails only if the uploaded config is not a JSON object.
pub fn merge_into_config(
    model_config: Option<&[u8]>,
    quantization_config: Value,
) -> Result<Vec<u8>, String> {
    let mut config: Map<String, Value> = match model_config {
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("the model's config.json is not a JSON object".into()),
            Err(e) => return Err(format!("the model's config.json is not valid JSON: {e}")),
        },
        None => Map::new(),
    };
    config.insert("quantization_config".into(), quantization_config);
    let mut bytes =
        serde_json::to_vec_pretty(&Value::Object(config)).expect("JSON values serialize");
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_model_config_and_adds_the_block() {
        let group = ConfigGroup {
            format: "int-quantized",
            weights: int_weight_args(8, true, "channel", None),
            targets: vec!["fc1".into()],
        };
        let merged = merge_into_config(
            Some(br#"{"model_type": "bert", "hidden_size": 384}"#),
            quantization_config(&[group]),
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(value["model_type"], "bert");
        assert_eq!(value["quantization_config"]["format"], "int-quantized");
        assert_eq!(
            value["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"],
            "channel"
        );
        assert!(merge_into_config(Some(b"[1,2]"), json!({})).is_err());
        assert!(merge_into_config(Some(b"{oops"), json!({})).is_err());
    }
}
