"""Golden text-encoder cases (t5_case_*): Wan's umT5 encoder on given token ids, trimmed per prompt.

The case file holds the padded ids and mask; the weights are `tiny_t5.safetensors` next to it (Wan's key layout).
They are loaded by the same loader users get (layout detection, rename, streamed load) in float32 and run on the
512-long padded batch exactly as the reference; every `out.context_i` must match within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conformance.runner import CaseOutcome
from ovi_core.text_encoder import encode_token_ids, load_umt5_encoder

from .common import load_case, max_abs_err

TOLERANCE = 1e-4  # golden README: float32 implementations, atol 1e-4 on the trimmed contexts (fp32 vs fp64: 6.7e-6)


def run(path: Path) -> CaseOutcome:
    path = Path(path)
    tensors, _ = load_case(path)
    model, _ = load_umt5_encoder(path.parent / "tiny_t5.safetensors", dtype=torch.float32)
    contexts = encode_token_ids(model, tensors["in.input_ids"], tensors["in.attention_mask"])
    pairs = {f"out.context_{i}": (got, tensors[f"out.context_{i}"]) for i, got in enumerate(contexts)}
    if len(pairs) != sum(k.startswith("out.context_") for k in tensors):
        return CaseOutcome(float("inf"), TOLERANCE, "number of prompts differs from the case's contexts")
    err, where = max_abs_err(pairs)
    return CaseOutcome(err, TOLERANCE, where)
