"""Loads safetensors files with the `safetensors` package (numpy backend) and prints, as JSON,
every tensor's dtype and shape plus, for compressed-tensors int8 weights, the dequantized values
computed here in numpy from the stored int8 / scale / zero point tensors.

usage: read_safetensors.py FILE [FILE ...]
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def describe(path):
    tensors = load_file(path)
    out = {"tensors": {}, "dequantized": {}}
    for name, array in tensors.items():
        out["tensors"][name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    for name, array in tensors.items():
        scale = tensors.get(name + "_scale")
        if array.dtype != np.int8 or scale is None:
            continue
        zero = tensors.get(name + "_zero_point")
        rows = array.reshape(array.shape[0], -1).astype(np.float32)
        zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
        values = (rows - zero.reshape(-1, 1)) * scale.reshape(-1, 1).astype(np.float32)
        out["dequantized"][name] = values.reshape(-1).tolist()
    return out


if __name__ == "__main__":
    print(json.dumps({path: describe(path) for path in sys.argv[1:]}))
