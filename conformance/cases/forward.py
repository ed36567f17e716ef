"""forward_case_*: one fused forward of the tiny model (float32), compared with the reference's out.*."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from conformance.cases.common import load_case, max_abs_err
from conformance.runner import CaseOutcome

TOLERANCE = 1e-4  # float32; the reference's own fp32-vs-fp64 difference is <= 2.75e-6


@lru_cache(maxsize=2)
def tiny_model(golden_dir: Path):
    """The golden set's tiny fusion model (tiny_fusion.safetensors + tiny_config.json), float32."""
    from ovi_core.config import FusionConfig
    from ovi_core.weights import load_fusion_model

    cfg = FusionConfig.from_reference_json(json.loads((golden_dir / "tiny_config.json").read_text()))
    model, _ = load_fusion_model(golden_dir / "tiny_fusion.safetensors", dtype=torch.float32, config=cfg,
                                 variant="720x720_5s")
    return model


def run(path: Path) -> CaseOutcome:
    d, _ = load_case(path)
    model = tiny_model(path.parent)
    video, audio = model(
        d["in.video_latent"],
        d["in.audio_latent"],
        d["in.t"],
        [d["in.video_context"]],
        [d["in.audio_context"]],
        first_frame_is_clean=bool(d["in.first_frame_is_clean"].item()),
        slg_layer=int(d["in.slg_layer"].item()),
    )
    err, where = max_abs_err({"out.video": (video[0], d["out.video"]), "out.audio": (audio[0], d["out.audio"])})
    return CaseOutcome(err, TOLERANCE, where)
