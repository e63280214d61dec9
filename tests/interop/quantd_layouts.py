"""Decodes the binary / ternary / k-means tensors of a quantd safetensors file with the numpy
decoders printed in docs/quantd-layouts.md (executed as written), so the document is checked
against real files.

usage: quantd_layouts.py FILE.safetensors
prints JSON: {name: [floats, row-major]} for every tensor the file's metadata marks as quantd.
"""
import json
import pathlib
import re
import sys

import numpy as np
from safetensors import safe_open

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "quantd-layouts.md"


def load_decoders():
    namespace = {"np": np, "json": json}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        exec(block, namespace)
    return namespace


def main(path):
    decoders = load_decoders()
    with safe_open(path, framework="np") as file:
        names = [key[len("quantd."):-len(".scheme")] for key in (file.metadata() or {}) if key.startswith("quantd.") and key.endswith(".scheme")]
    out = {name: np.asarray(decoders["load_quantd_tensor"](path, name), dtype=np.float32).reshape(-1).tolist() for name in names}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
