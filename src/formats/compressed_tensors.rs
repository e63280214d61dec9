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

/// Weight-quantization arguments of one config group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntWeightArgs {
    pub num_bits: u8,
    pub symmetric: bool,
    /// `"channel"` or `"tensor"` (compressed-tensors `QuantizationStrategy`).
    pub strategy: &'static str,
}

/// The `quantization_config` object for weight-only integer quantization: one config group per
/// distinct set of arguments, each targeting its modules by name.
pub fn int_quantization_config(groups: &[(IntWeightArgs, Vec<String>)]) -> Value {
    let config_groups: Map<String, Value> = groups
        .iter()
        .enumerate()
        .map(|(index, (args, targets))| {
            (
                format!("group_{index}"),
                json!({
                    "targets": targets,
                    "weights": {
                        "num_bits": args.num_bits,
                        "type": "int",
                        "symmetric": args.symmetric,
                        "strategy": args.strategy,
                        "group_size": null,
                        "block_structure": null,
                        "dynamic": false,
                        "actorder": null,
                        "observer": "minmax",
                        "observer_kwargs": {}
                    },
                    "input_activations": null,
                    "output_activations": null
                }),
            )
        })
        .collect();
    json!({
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": [],
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {}
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
        let args = IntWeightArgs {
            num_bits: 8,
            symmetric: true,
            strategy: "channel",
        };
        let merged = merge_into_config(
            Some(br#"{"model_type": "bert", "hidden_size": 384}"#),
            int_quantization_config(&[(args, vec!["fc1".into()])]),
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
