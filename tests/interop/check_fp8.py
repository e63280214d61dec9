"""Checks FP8 weights written by quantd against ml_dtypes: every stored byte must equal
ml_dtypes' own float32 -> float8_e4m3fn conversion of weight / scale.

usage: check_fp8.py QUANTIZED.safetensors ORIGINAL.safetensors NAME [NAME ...]
prints JSON: {name: {"mismatches": int, "n": int}}
"""
import json
import sys

import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def stored_bytes(path, name):
    # Read the raw F8_E4M3 bytes without relying on numpy knowing the dtype.
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
        begin, end = header[name]["data_offsets"]
        f.seek(8 + header_len + begin)
        return np.frombuffer(f.read(end - begin), dtype=np.uint8)


def main(quantized_path, original_path, names):
    original = load_file(original_path)
    with safe_open(quantized_path, "np") as f:
        scales = {name: f.get_tensor(name + "_scale") for name in names}
    result = {}
    for name in names:
        weight = original[name].astype(np.float32)
        scale = scales[name].astype(np.float32).reshape(-1, 1) if scales[name].size > 1 else scales[name].astype(np.float32).reshape(1, 1)
        expected = (weight.reshape(weight.shape[0], -1) / scale).astype(ml_dtypes.float8_e4m3fn)
        ours = stored_bytes(quantized_path, name)
        mismatches = int(np.count_nonzero(expected.reshape(-1).view(np.uint8) != ours))
        result[name] = {"mismatches": mismatches, "n": int(ours.size)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
