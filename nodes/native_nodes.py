"""Ovi's native-path nodes (V3): the joint audio+video LATENT, Ovi's guider, σ lists, solvers and noise for core's
SamplerCustomAdvanced / KSampler. Each is a thin wrapper over nodes/native_model.py.

ComfyUI-only (imports comfy_api and, through native_model, comfy at the top): the pack imports this module only
when ComfyUI is present and registers ``NATIVE_NODES``.
"""

from __future__ import annotations

import comfy.nested_tensor
import torch
from comfy_api.latest import io

from ovi_core import knobs
from ovi_core.config import VARIANTS
from ovi_core.errors import OviInputError
from ovi_core.sizes import VAE_STRIDE, check_clip_size

from . import native_model as native
from .bridge import knob_input

CATEGORY = "Ovi/native"


LENGTHS_NOTE = ("5 s: 720x720_5s, 960x960_5s (121 frames, 157 audio latents); 10 s: 960x960_10s (241 frames, 314 "
                "audio latents).")


# ---- lengths -------------------------------------------------------------------------------------------------------
def clip_lengths() -> dict[int, tuple[int, int, int]]:
    """{seconds: (pixel frames, video latents, audio latents)} of the released variants (5 s and 10 s)."""
    return {round(v.num_frames / v.fps): (v.num_frames, v.video_latent_length, v.audio_latent_length)
            for v in VARIANTS.values()}


def latent_lengths(length) -> tuple[int, int]:
    """(video latents, audio latents) for a length in seconds (5, 10) or pixel frames (121, 241); else OviInputError."""
    lengths = clip_lengths()
    for seconds, (frames, video, audio) in lengths.items():
        if length in (seconds, frames) and not isinstance(length, bool):
            return video, audio
    offered = ", ".join(f"{s} s ({f} frames)" for s, (f, _, _) in sorted(lengths.items()))
    raise OviInputError(f"length {length!r} is not a clip length Ovi was trained for; use {offered} — give seconds or "
                        "the frame count (5 s for the 720x720_5s and 960x960_5s models, 10 s for 960x960_10s)")


def _ovi_model(model):
    """The OviAV inside a MODEL, or OviInputError naming what was connected."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, native.OviAV):
        raise OviInputError(f"model is {type(inner or model).__name__}, not an Ovi model: connect Ovi Model Loader's "
                            "MODEL (possibly through LoRA or ModelSamplingSD3 nodes)")
    return inner


# ---- noise ---------------------------------------------------------------------------------------------------------
class NestedNoise(native.OviNoise):
    """Ovi's noise for the seed (as Ovi's own sampler draws it), refusing a latent that is not the joint one."""

    def generate_noise(self, input_latent: dict):
        if not getattr(input_latent["samples"], "is_nested", False):
            raise OviInputError("Ovi Noise makes noise for the joint audio+video LATENT (Ovi Empty Latent or "
                                f"LTXVConcatAVLatent); got one tensor {list(input_latent['samples'].shape)}")
        return super().generate_noise(input_latent)


class NoNoise:
    """Zeros for every part of a (joint) latent: core's DisableNoise makes zeros of the *video* shape only for a
    nested latent, which fails in sampling (see docs/native_model_design.md §6)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def generate_noise(self, input_latent: dict):
        samples = input_latent["samples"]
        if getattr(samples, "is_nested", False):
            return comfy.nested_tensor.NestedTensor(tuple(torch.zeros_like(t, device="cpu") for t in samples.unbind()))
        return torch.zeros_like(samples, device="cpu")


# ---- nodes ---------------------------------------------------------------------------------------------------------
class OviEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviEmptyLatent", display_name="Ovi Empty Latent", category=CATEGORY,
            description="An empty joint audio+video LATENT for Ovi (video and audio in one, as LTXVConcatAVLatent).",
            inputs=[
                knob_input(knobs.WIDTH, extra="Keep width x height near the model's trained area (720x720_5s "
                                              "~704x704, 960 models ~960x960)."),
                knob_input(knobs.HEIGHT),
                knob_input(knobs.LENGTH, extra=LENGTHS_NOTE),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Clips generated at once (Ovi Noise gives each the same seed's noise)."),
            ],
            outputs=[io.Latent.Output(tooltip="Video [B, 48, F, H/16, W/16] + audio [B, 20, L] in one nested "
                                              "LATENT: for SamplerCustomAdvanced / KSampler, split with "
                                              "LTXVSeparateAVLatent.")],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None):
        """Before the run. Raises (ComfyUI lists a raised error once; a returned message once per input named here);
        a missing input is left to ComfyUI, a linked one (None) is checked when the node runs."""
        if width is not None and height is not None:
            check_clip_size(width, height, None, "any Ovi model")
        if length is not None:
            latent_lengths(length)
        return True

    @classmethod
    def execute(cls, width, height, length, batch_size) -> io.NodeOutput:
        width, height = check_clip_size(width, height, None, "any Ovi model")
        video, audio = latent_lengths(length)
        return io.NodeOutput(native.empty_av_latent(video, height // VAE_STRIDE, width // VAE_STRIDE, audio,
                                                    batch_size))


class OviGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviGuider", display_name="Ovi Guider", category=CATEGORY,
            description="Ovi's guidance for SamplerCustomAdvanced: separate video and audio cfg, audio negative, "
                        "skip-layer guidance.",
            inputs=[
                io.Model.Input("model", tooltip="Ovi's MODEL (Ovi Model Loader, possibly through LoRA nodes)."),
                io.Conditioning.Input("positive", tooltip="The prompt (Ovi Text Encode, or CLIPTextEncode with "
                                                          "umT5-XXL loaded by CLIPLoader type wan)."),
                io.Conditioning.Input("negative", tooltip="The video negative (Ovi Text Encode's negative carries "
                                                          "the audio negative too)."),
                io.Conditioning.Input("audio_negative", optional=True,
                                      tooltip="The audio tower's negative; when connected it replaces the audio "
                                              "negative carried by 'negative' (unconnected: that one, or 'negative' "
                                              "itself)."),
                knob_input(knobs.VIDEO_GUIDANCE, "video_cfg"),
                knob_input(knobs.AUDIO_GUIDANCE, "audio_cfg"),
                knob_input(knobs.SLG_LAYER, "skip_layer", extra="The model's depth: 30; the demo model: 3."),
                knob_input(knobs.SYNC_GUIDANCE, extra="Costs one more forward per step.", optional=True),
                knob_input(knobs.SYNC_CUT, optional=True),
            ],
            outputs=[io.Guider.Output(tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, video_cfg, audio_cfg, skip_layer, audio_negative=None,
                sync_guidance=knobs.SYNC_GUIDANCE.default, sync_cut=knobs.SYNC_CUT.default):
        depth = _ovi_model(model).diffusion_model.cfg.num_layers
        knobs.check(knobs.SLG_LAYER, skip_layer, "skip_layer", num_layers=depth)
        knobs.check(knobs.VIDEO_GUIDANCE, video_cfg, "video_cfg")
        knobs.check(knobs.AUDIO_GUIDANCE, audio_cfg, "audio_cfg")
        knobs.check_sampling(sync_guidance=sync_guidance, sync_cut=sync_cut)
        patched = model.clone()
        patched.model_options.setdefault("transformer_options", {})[native.SLG_OPTION] = max(int(skip_layer), 0)
        guider = native.OviGuider(patched, float(video_cfg), float(audio_cfg), sync_scale=float(sync_guidance),
                                  sync_cut=sync_cut)
        if audio_negative is not None:
            guider.set_conds(positive, negative, audio_negative)
        else:  # the audio negative rides in the negative's entries (or the audio tower gets 'negative' too)
            guider.inner_set_conds({"positive": positive, "negative": negative})
        return io.NodeOutput(guider)


class OviScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviScheduler", display_name="Ovi Scheduler", category=CATEGORY,
            description="Ovi's exact σ list for a solver, steps and shift (SIGMAS for SamplerCustomAdvanced).",
            inputs=[
                knob_input(knobs.SOLVER, extra="Whose σ list: use the same solver in Ovi Sampler Select (or core "
                                               "euler with the euler list)."),
                knob_input(knobs.STEPS),
                knob_input(knobs.SHIFT, extra=f"Ovi Sampler Select's solvers need the model's shift ({knobs.SHIFT.default} unless "
                                              "ModelSamplingSD3 changed it)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 σ values, ending in 0.")],
        )

    @classmethod
    def execute(cls, solver, steps, shift) -> io.NodeOutput:
        return io.NodeOutput(native.ovi_sigmas(solver, steps, shift))  # make_scheduler checks the three


class OviSamplerSelect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviSamplerSelect", display_name="Ovi Sampler Select", category=CATEGORY,
            description="Ovi's own solver steps (exactly Ovi's unipc / dpm++ / euler) as a SAMPLER.",
            inputs=[knob_input(knobs.SOLVER, extra="Exactly Ovi's steps and model timesteps (core's uni_pc is "
                                                   "another UniPC). Needs Ovi Scheduler with the same solver.")],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, solver) -> io.NodeOutput:
        return io.NodeOutput(native.ovi_sampler(solver))


class OviNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviNoise", display_name="Ovi Noise", category=CATEGORY,
            description="Ovi's initial noise for a seed (the same as Ovi Sampler's), or none, for the joint LATENT.",
            inputs=[
                knob_input(knobs.SEED, control_after_generate=True),
                io.Boolean.Input("add_noise", default=True,
                                 tooltip="Off: no noise (zeros for video and audio), e.g. for a second sampling "
                                         "stage — core DisableNoise fails on audio+video latents."),
            ],
            outputs=[io.Noise.Output(tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, seed, add_noise) -> io.NodeOutput:
        return io.NodeOutput(NestedNoise(seed) if add_noise else NoNoise(seed))


NATIVE_NODES = [OviEmptyLatent, OviGuider, OviScheduler, OviSamplerSelect, OviNoise]
NATIVE_NODES += __import__(f"{__package__}.av_nodes", fromlist=["AV_NODES"]).AV_NODES  # Ovi Audio Encode, Ovi Video To Audio, Ovi AV Latent From Parts
NATIVE_NODES += __import__(f"{__package__}.extend_nodes", fromlist=["EXTEND_NODES"]).EXTEND_NODES  # Ovi Extend, Ovi Join Clips
