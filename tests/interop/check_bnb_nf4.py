"""Checks quantd's NF4 checkpoints against bitsandbytes itself (its CPU path: quantize_4bit,
quantize_blockwise, dequantize_4bit, QuantState.from_dict).

usage: check_bnb_nf4.py ORIGINAL.safetensors PLAIN.safetensors PLAIN_DEQUANTIZED.safetensors
                        NESTED.safetensors NESTED_DEQUANTIZED.safetensors NESTED_CONFIG.json
                        NAME...

For each NAME (a 2-D f32 weight of ORIGINAL), PLAIN is quantd's NF4 artifact, NESTED its
double-quantized one, the *_DEQUANTIZED files quantd's own dequantization. Prints JSON:
{"config": {...}, "tensors": {NAME: {check: value}}}; every boolean must be true, counts are
for the report. The assertions live in tests/api/interop.rs; this script only measures.

Double quantization: our offset (the mean of the absmax values, rounded once from f64) and
torch's `absmax.mean()` (an f32 sum) can differ by an ulp or two, and that is the only input
that differs. So the script checks (1) given our offset, bnb's quantize_blockwise gives our
indices and nested absmax bit for bit; (2) bnb decodes our state dict to our values bit for
bit; (3) against bnb's own quantize_4bit(compress_statistics=True) end to end, every weight is
within the bound derived in src/quant/nf4/double_quant.rs:
    |ours - bnb| <= |NF4[nibble]| * (2*delta + 3*ulp(max(|r|, M)) + gap) + ulp(|value|)
with delta = |offset_ours - offset_bnb|, r the block's reconstructed absmax, M the nested
absmax, and gap = |code[q_bnb] - code[q_ours]| * M when the 8-bit indices differ (allowed only
between neighbouring entries), 0 otherwise.
"""
import json
import sys

import numpy as np
import torch
from bitsandbytes import functional as F
from bitsandbytes.functional import QuantState
from safetensors.numpy import load_file


def as_u8(array):
    return np.ascontiguousarray(array).view(np.uint8).reshape(-1)


def same_bytes(ours, theirs):
    return bool(np.array_equal(as_u8(ours), as_u8(theirs)))


def state_dict(tensors, name):
    """Our tensors for one weight, as Linear4bit's state dict holds them (prefix stripped)."""
    prefix = name + "."
    return {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in tensors.items() if k.startswith(prefix)}


def decode(packed, state):
    """bnb's dequantize_4bit over the flattened weight. bitsandbytes 0.50.2's native CPU kernel
    (AVX-512 build) indexes absmax per row, `row * (cols / 64) + col / 64` with an integer
    division, so it decodes wrongly (its own checkpoints too) when a row is not a whole number
    of 64-element blocks; as one row of n elements the same kernel is right."""
    shape = state.shape
    state.shape = torch.Size([shape.numel()])
    try:
        out = F.dequantize_4bit(packed, state)
    finally:
        state.shape = shape
    return out.reshape(shape)


def ulp(values):
    return np.spacing(np.abs(values).astype(np.float32)).astype(np.float64)


def check_plain(weight, ours, ours_deq, name):
    packed, state = F.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    report = {
        "packed_identical": same_bytes(ours[name], packed.numpy()),
        "packed_shape_identical": list(ours[name].shape) == list(packed.shape),
        "absmax_identical": same_bytes(ours[name + ".absmax"], state.absmax.numpy()),
        "quant_map_identical": same_bytes(ours[name + ".quant_map"], state.code.numpy()),
    }
    # The serialized keys and values bnb's Linear4bit writes for the same weight.
    theirs = {name + "." + k: v.numpy() for k, v in state.as_dict(packed=True).items()}
    ours_keys = {k for k in ours if k.startswith(name + ".")}
    report["state_keys_identical"] = ours_keys == set(theirs)
    report["state_values_identical"] = all(same_bytes(ours[k], v) for k, v in theirs.items() if k in ours)
    # bnb reading our state dict decodes to our values.
    restored = QuantState.from_dict(state_dict(ours, name), device=torch.device("cpu"))
    our_packed = torch.from_numpy(ours[name].copy())
    decoded = decode(our_packed, restored).numpy()
    report["bnb_decodes_ours_identically"] = same_bytes(decoded, ours_deq[name])
    # Informational: bnb's kernel on the 2-D shape, and whether it treats our file as its own.
    native = F.dequantize_4bit(our_packed, restored).numpy()
    report["native_2d_decode_identical"] = same_bytes(native, ours_deq[name])
    report["native_2d_decode_same_as_for_bnb_file"] = same_bytes(native, F.dequantize_4bit(packed, state).numpy())
    return report, state


def check_nested(weight, plain_state, ours, ours_deq, name):
    packed, state = F.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
    our_state = json.loads(bytes(ours[name + ".quant_state.bitsandbytes__nf4"]).decode())
    our_offset = np.float32(our_state["nested_offset"])
    their_offset = np.float32(state.offset.item())
    report = {
        "packed_identical": same_bytes(ours[name], packed.numpy()),
        "nested_quant_map_identical": same_bytes(ours[name + ".nested_quant_map"], state.state2.code.numpy()),
        "offset_ulps": abs(int(our_offset.view(np.int32)) - int(their_offset.view(np.int32))),
    }
    # (1) bnb's blockwise quantizer on bnb's own absmax minus our offset.
    centered = plain_state.absmax - torch.tensor(float(our_offset), dtype=torch.float32)
    q_given, state2_given = F.quantize_blockwise(centered, blocksize=256)
    report["indices_identical_given_our_offset"] = same_bytes(ours[name + ".absmax"], q_given.numpy())
    report["nested_absmax_identical_given_our_offset"] = same_bytes(
        ours[name + ".nested_absmax"], state2_given.absmax.numpy()
    )
    # (2) bnb decodes our state dict to exactly our values.
    restored = QuantState.from_dict(state_dict(ours, name), device=torch.device("cpu"))
    decoded = decode(torch.from_numpy(ours[name].copy()), restored).numpy()
    report["bnb_decodes_ours_identically"] = same_bytes(decoded, ours_deq[name])
    # serialization: same keys as bnb's state dict, same values except the offset-dependent ones.
    theirs = {name + "." + k: v for k, v in state.as_dict(packed=True).items()}
    report["state_keys_identical"] = {k for k in ours if k.startswith(name + ".")} == set(theirs)
    their_json = json.loads(bytes(theirs[name + ".quant_state.bitsandbytes__nf4"].numpy()).decode())
    report["state_json_keys_in_order"] = list(our_state) == list(their_json)
    report["state_json_equal_but_offset"] = {k: v for k, v in our_state.items() if k != "nested_offset"} == {
        k: v for k, v in their_json.items() if k != "nested_offset"
    }
    # (3) end to end against bnb's own double quantization, within the derived bound.
    theirs_deq = decode(packed, state).numpy().astype(np.float64).reshape(-1)
    ours_flat = ours_deq[name].astype(np.float64).reshape(-1)
    code = state.state2.code.numpy().astype(np.float64)
    q_bnb = state.absmax.numpy().astype(np.int64)
    q_ours = ours[name + ".absmax"].astype(np.int64)
    m_bnb = np.repeat(state.state2.absmax.numpy().astype(np.float64), 256)[: len(q_bnb)]
    m_ours = np.repeat(ours[name + ".nested_absmax"].astype(np.float64), 256)[: len(q_ours)]
    r_bnb = (F.dequantize_blockwise(state.absmax, state.state2) + state.offset).numpy().astype(np.float64)
    r_ours = (F.dequantize_blockwise(restored.absmax, restored.state2) + restored.offset).numpy().astype(np.float64)
    delta = abs(float(our_offset) - float(their_offset))
    m = np.maximum(m_bnb, m_ours)
    gap = np.abs(code[q_bnb] - code[q_ours]) * m
    block_bound = 2 * delta + 3 * ulp(np.maximum(np.maximum(np.abs(r_bnb), np.abs(r_ours)), m)) + gap
    nibbles = np.empty(2 * len(ours[name].reshape(-1)), dtype=np.int64)
    nibbles[0::2] = ours[name].reshape(-1) >> 4
    nibbles[1::2] = ours[name].reshape(-1) & 15
    nibbles = nibbles[: len(ours_flat)]
    nf4 = np.abs(ours[name + ".quant_map"].astype(np.float64))[nibbles]
    block_of = np.arange(len(ours_flat)) // 64
    bound = nf4 * block_bound[block_of] + ulp(np.maximum(np.abs(ours_flat), np.abs(theirs_deq)))
    diff = np.abs(ours_flat - theirs_deq)
    report.update(
        {
            "indices_differing": int((q_bnb != q_ours).sum()),
            "indices_only_neighbours": bool((np.abs(q_bnb - q_ours) <= 1).all()),
            "blocks_within_bound": bool((np.abs(r_bnb - r_ours) <= block_bound).all()),
            "values_within_bound": bool((diff <= bound).all()),
            "values_identical_to_bnb": bool(np.array_equal(ours_flat, theirs_deq)),
            "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
            "max_bound": float(bound.max()) if len(bound) else 0.0,
        }
    )
    # all-zero weights decode to exactly 0 in both.
    zeros = weight.numpy().reshape(-1) == 0
    report["zeros"] = int(zeros.sum())
    report["zeros_exact_ours"] = bool((ours_flat[zeros] == 0).all())
    report["zeros_exact_bnb"] = bool((theirs_deq[zeros] == 0).all())
    return report


def main(original, plain, plain_deq, nested, nested_deq, config_path, names):
    original = load_file(original)
    plain, plain_deq = load_file(plain), load_file(plain_deq)
    nested, nested_deq = load_file(nested), load_file(nested_deq)
    with open(config_path) as f:
        config = json.load(f)["quantization_config"]
    tensors = {}
    for name in names:
        weight = torch.from_numpy(original[name].copy())
        report, plain_state = check_plain(weight, plain, plain_deq, name)
        report["shape"] = list(weight.shape)
        report["nested"] = check_nested(weight, plain_state, nested, nested_deq, name)
        tensors[name] = report
    print(json.dumps({"config": config, "tensors": tensors}))


if __name__ == "__main__":
    main(*sys.argv[1:7], sys.argv[7:])
