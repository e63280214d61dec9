"""Decompresses a compressed-tensors checkpoint written by quantd with the compressed-tensors
package itself: its QuantizationConfig parses our config.json, its registered compressor for the
config's format turns each targeted module's stored tensors back into float weights.

usage: ct_decompress.py MODEL.safetensors CONFIG.json
prints JSON: {"format": ..., "weights": {module: [floats, row-major]}}
"""
import json
import sys

from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file


def main(model_path, config_path):
    with open(config_path) as f:
        config = QuantizationConfig.model_validate(json.load(f)["quantization_config"])
    tensors = load_file(model_path)
    weights = {}
    for scheme in config.config_groups.values():
        # mixed-precision checkpoints name the format per group
        compressor = BaseCompressor.get_value_from_registry(scheme.format or config.format)
        for module in scheme.targets:
            prefix = module + "."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            restored = compressor.decompress(state, scheme)
            weights[module] = restored["weight"].float().reshape(-1).tolist()
    print(json.dumps({"format": config.format, "weights": weights}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
