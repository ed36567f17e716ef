"""sampling_case_*: a whole short sampling run of the tiny model (float32), compared with the reference's final.*.

The case gives the initial noises, the three text embeddings, the solver settings and (image-to-video) the
first-frame latent; we run ovi_core.sampler.sample_joint with our default fast path (batched guidance passes,
cached text projections) and compare the final latents.
"""

from __future__ import annotations

from pathlib import Path

from conformance.cases.common import load_case, max_abs_err
from conformance.cases.forward import tiny_model
from conformance.runner import CaseOutcome

TOLERANCE = 5e-4  # float32; the reference's own fp32-vs-fp64 difference on final.* is <= 4.2e-6


def case_settings(tensors: dict, meta: dict) -> dict:
    """sample_joint keyword arguments of a case (from its JSON sidecar; steps also from the tensors)."""
    c = meta["case"]
    return dict(
        solver=c["solver"],
        steps=int(tensors["sched.timesteps"].numel()),
        shift=float(c["shift"]),
        video_guidance=float(c["gv"]),
        audio_guidance=float(c["ga"]),
        slg_layer=int(c["slg"]),
    )


def run_case(path: Path, **overrides):
    """(final video [48, F, h, w], final audio [L, 20], case tensors) of one case; overrides go to sample_joint."""
    from ovi_core.sampler import PromptEmbeddings, sample_joint

    d, meta = load_case(path)
    model = tiny_model(path.parent)
    kwargs = case_settings(d, meta) | overrides
    video, audio = sample_joint(
        model,
        PromptEmbeddings(d["text.pos"], d["text.video_neg"], d["text.audio_neg"]),
        video_noise=d["init.video_noise"],
        audio_noise=d["init.audio_noise"],
        first_frame_latent=d.get("cond.first_frame_latent"),
        **kwargs,
    )
    return video[0], audio[0], d


def run(path: Path) -> CaseOutcome:
    video, audio, d = run_case(path)
    err, where = max_abs_err(
        {"final.video_latent": (video, d["final.video_latent"]), "final.audio_latent": (audio, d["final.audio_latent"])}
    )
    return CaseOutcome(err, TOLERANCE, where)
