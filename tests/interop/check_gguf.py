"""Checks a GGUF file written by quantd with the `gguf` package (gguf-py):
GGUFReader opens it; every block-quantized tensor's bytes equal gguf.quants.quantize() of the
original F32 weights (where gguf-py has a quantizer: not for the K-quants, whose bytes the caller
compares with llama.cpp's through "sha256"); gguf.quants.dequantize() of our bytes is returned
for comparison with quantd's own dequantization.

usage: check_gguf.py FILE.gguf ORIGINAL.safetensors
prints JSON: {"metadata": {...},
              "tensors": {name: {"type", "shape", "sha256", "bytes_equal", "dequantized"}}}
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf import quants
from safetensors.numpy import load_file


def main(gguf_path, original_path):
    reader = GGUFReader(gguf_path)
    original = load_file(original_path)
    metadata = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        value = field.contents()
        metadata[field.name] = value if isinstance(value, (str, int, float, list)) else str(value)
    tensors = {}
    for tensor in reader.tensors:
        qtype = GGMLQuantizationType(tensor.tensor_type)
        entry = {"type": qtype.name, "shape": [int(d) for d in reversed(tensor.shape.tolist())]}
        if qtype not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.I64):
            ours = np.asarray(tensor.data)
            entry["sha256"] = hashlib.sha256(ours.view(np.uint8).tobytes()).hexdigest()
            reference = original[tensor.name].astype(np.float32)
            try:
                expected = quants.quantize(reference, qtype)
            except NotImplementedError:
                entry["bytes_equal"] = None
            else:
                ours = ours.reshape(expected.shape)
                entry["bytes_equal"] = bool(np.array_equal(expected.view(np.uint8), ours.view(np.uint8)))
            entry["dequantized"] = quants.dequantize(ours, qtype).astype(np.float32).reshape(-1).tolist()
        tensors[tensor.name] = entry
    print(json.dumps({"metadata": metadata, "tensors": tensors}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
