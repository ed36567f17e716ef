"""Loader nodes: the fusion model, the text encoder, the video VAE, the audio VAE + vocoder (V3 nodes).

Each lists the files of its model folders plus a built-in demo entry (tiny random-weight models from ovi_core, no
download). The model loader returns core's MODEL (core samplers, Ovi Sampler, LoRA loaders); the others return a
handle on one of the pack's own sockets.
"""

from __future__ import annotations

import logging

import torch

from ovi_core import knobs
from ovi_core.config import get_variant
from ovi_core.demo import (
    DEMO_CONFIG,
    DEMO_SETTINGS,
    DEMO_VARIANT,
    build_demo_audio_decoder,
    build_demo_fusion,
    build_demo_text_encoder,
    build_demo_video_vae,
)
from ovi_core.errors import OviInputError
from ovi_core.fusion import OviFusion
from ovi_core.mmaudio_vae import load_audio_decoder
from ovi_core.text_encoder import load_text_encoder
from ovi_core.wan_vae import load_video_vae
from ovi_core.weights import inspect_checkpoint, load_fusion_model

from . import bridge
from .bridge import DEMO_ENTRY, io, knob_input
from .handles import (
    MEMORY_MODES,
    OviAudioVAEHandle,
    OviAudioVAEType,
    OviTextEncoderHandle,
    OviTextEncoderType,
    OviVideoVAEHandle,
    OviVideoVAEType,
    make_model,
)

log = logging.getLogger(__name__)

MODEL_FOLDERS = ("ovi", "diffusion_models")
TEXT_ENCODER_FOLDERS = ("text_encoders", "ovi")
VIDEO_VAE_FOLDERS = ("vae", "ovi")
AUDIO_VAE_FOLDERS = ("mmaudio", "ovi", "vae")
VOCODER_IN_VAE_FILE = "(inside the VAE file)"
DEMO_SLG_LAYER = DEMO_SETTINGS.slg_layer  # the demo model has 3 fused blocks; Ovi's 11 is for the 30-block model


def _stored_dtype(info, weight_dtype: str, compute: torch.dtype) -> torch.dtype:
    """The dtype the weights will be kept in (what ComfyUI's operations cast from); info: weights.inspect_checkpoint."""
    if knobs.WEIGHT_DTYPES[weight_dtype] is not None:
        return knobs.WEIGHT_DTYPES[weight_dtype]
    return info.fp8_dtype or compute  # an fp8 file keeps its own fp8 (e4m3fn or e5m2)


def load_ovi_model(model_name: str, variant: str, weight_dtype: str, attention: str, memory_mode: str = MEMORY_MODES[0],
                   swap_blocks: int = 0):
    """The MODEL of a checkpoint (or the demo entry), its layers built from ComfyUI's operations."""
    if memory_mode != MEMORY_MODES[0] or swap_blocks:
        log.warning("Ovi Model Loader: memory_mode %r / swap_blocks %d are deprecated and ignored: ComfyUI loads as much "
                    "of the model as fits and keeps the rest in RAM (start ComfyUI with --lowvram or --novram for less "
                    "VRAM)", memory_mode, swap_blocks)
    devices = bridge.devices_for("diffusion")
    dtype = bridge.compute_dtype(devices.load)
    if model_name == DEMO_ENTRY:
        ops = bridge.layer_operations(torch.float32, torch.float32, devices.load)  # float32: it is tiny
        net = build_demo_fusion(device=devices.offload)
        if ops is not None:
            with torch.device("meta"):
                shell = OviFusion(DEMO_CONFIG, operations=ops)
            shell.load_state_dict(net.state_dict(), assign=True)
            net = shell.eval().requires_grad_(False)
        net.set_attention_backend(attention)
        return make_model(net, DEMO_VARIANT, model_name, devices, DEMO_SLG_LAYER)
    path = bridge.resolve_file(MODEL_FOLDERS, model_name, "Ovi model")
    found = inspect_checkpoint(path)  # what the file is (either half of a split model joins its partner), read once
    ops = bridge.layer_operations(_stored_dtype(found, weight_dtype, dtype), dtype, devices.load)
    net, info = load_fusion_model(path, device=devices.offload, dtype=dtype, weight_dtype=weight_dtype,
                                  variant=None if variant == "auto" else variant, attention=attention, operations=ops,
                                  info=found)
    return make_model(net, get_variant(info.variant), model_name, devices, knobs.SLG_LAYER.default)


class OviModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviModelLoader", display_name="Ovi Model Loader", category="Ovi/loaders",
            description=("Loads Ovi's fused audio+video model (chetwinlow1/Ovi model.safetensors, "
                         "model_960x960*.safetensors, or rkfg's model_fp8_e4m3fn.safetensors) from models/ovi or "
                         "models/diffusion_models as core's MODEL: Ovi Sampler, core KSampler / SamplerCustomAdvanced "
                         "(with Ovi Guider), LoRA loaders."),
            inputs=[
                io.Combo.Input("model_name", options=bridge.model_choices(MODEL_FOLDERS), tooltip=(
                    "The fused Ovi checkpoint (models/ovi or models/diffusion_models). "
                    f"'{DEMO_ENTRY}' needs no file: random weights, only to check the install.")),
                io.Combo.Input("variant", options=["auto", *knobs.VARIANT_NAMES], default="auto", tooltip=(
                    "Clip length, trained area and caption form of the checkpoint. auto: from the file name "
                    "(model.safetensors = 720x720_5s, model_960x960.safetensors = 960x960_5s, "
                    "model_960x960_10s.safetensors = 960x960_10s); set it when you renamed the file.")),
                knob_input(knobs.WEIGHT_DTYPE),
                knob_input(knobs.ATTENTION),
                io.Combo.Input("memory_mode", options=list(MEMORY_MODES), default=MEMORY_MODES[0], tooltip=(
                    "Deprecated, ignored (kept so saved workflows load): ComfyUI now loads as much of the model as "
                    "fits and keeps the rest in RAM, like its own models (--lowvram / --novram for less VRAM).")),
                io.Int.Input("swap_blocks", default=0, min=0, max=64, tooltip=(
                    "Deprecated, ignored (kept so saved workflows load): ComfyUI's partial loading replaces block "
                    "swap.")),
            ],
            outputs=[io.Model.Output("model", tooltip=(
                "The Ovi model (core MODEL): Ovi Sampler, or core KSampler / SamplerCustomAdvanced with Ovi "
                "Guider."))],
        )

    @classmethod
    def execute(cls, model_name, variant, weight_dtype, attention, memory_mode=MEMORY_MODES[0], swap_blocks=0):
        return io.NodeOutput(load_ovi_model(model_name, variant, weight_dtype, attention, memory_mode, swap_blocks))


class OviTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviTextEncoderLoader", display_name="Ovi Text Encoder Loader", category="Ovi/loaders",
            description=("Loads umT5-XXL for Ovi: ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled.safetensors or Wan's "
                         "models_t5_umt5-xxl-enc-bf16.pth (with its google/umt5-xxl tokenizer folder next to it)."),
            inputs=[
                io.Combo.Input("text_encoder_name", options=bridge.model_choices(TEXT_ENCODER_FOLDERS), tooltip=(
                    "The umT5-XXL file (models/text_encoders or models/ovi) — the same one Wan uses. "
                    f"'{DEMO_ENTRY}' is a tiny random encoder for the demo model.")),
                knob_input(knobs.TEXT_ENCODER_PRECISION, extra="fp8 files keep their fp8 weights either way."),
            ],
            outputs=[OviTextEncoderType.Output("text_encoder", tooltip="The text encoder, for Ovi Text Encode.")],
        )

    @classmethod
    def execute(cls, text_encoder_name, precision):
        devices = bridge.devices_for("text_encoder")
        dtype = bridge.compute_dtype(devices.load, precision)
        if text_encoder_name == DEMO_ENTRY:
            encoder = build_demo_text_encoder(device=devices.offload)
        else:
            path = bridge.resolve_file(TEXT_ENCODER_FOLDERS, text_encoder_name, "text encoder")
            encoder = load_text_encoder(path, device=devices.offload, dtype=dtype)
        return io.NodeOutput(OviTextEncoderHandle(encoder, text_encoder_name, devices))


class OviVideoVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviVideoVAELoader", display_name="Ovi Video VAE Loader", category="Ovi/loaders",
            description=("Loads the Wan2.2 video VAE (ComfyUI's wan2.2_vae.safetensors or Wan's Wan2.2_VAE.pth) for "
                         "Ovi Video Decode and image-to-video."),
            inputs=[
                io.Combo.Input("vae_name", options=bridge.model_choices(VIDEO_VAE_FOLDERS), tooltip=(
                    "The 48-channel Wan2.2 VAE (models/vae or models/ovi), the file core's VAELoader uses "
                    f"for Wan2.2-5B. '{DEMO_ENTRY}' is a tiny random VAE for the demo model.")),
                knob_input(knobs.VIDEO_VAE_PRECISION),
            ],
            outputs=[OviVideoVAEType.Output("video_vae", tooltip=(
                "The video VAE, for Ovi Video Decode and Ovi Sampler's start image."))],
        )

    @classmethod
    def execute(cls, vae_name, precision):
        devices = bridge.devices_for("vae")
        dtype = bridge.compute_dtype(devices.load, precision)
        if vae_name == DEMO_ENTRY:
            vae = build_demo_video_vae(device=devices.offload)
        else:
            vae = load_video_vae(bridge.resolve_file(VIDEO_VAE_FOLDERS, vae_name, "video VAE"),
                                 device=devices.offload, dtype=dtype)
        return io.NodeOutput(OviVideoVAEHandle(vae, vae_name, devices))


class OviAudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = bridge.model_choices(AUDIO_VAE_FOLDERS)
        return io.Schema(
            node_id="OviAudioVAELoader", display_name="Ovi Audio VAE Loader", category="Ovi/loaders",
            description=("Loads Ovi's audio VAE: the MMAudio 16 kHz VAE (v1-16.pth; decoder, and its encoder for Ovi "
                         "Audio Encode) and the BigVGAN vocoder (best_netG.pt), from models/mmaudio or models/ovi."),
            inputs=[
                io.Combo.Input("vae_name", options=choices, tooltip=(
                    "The MMAudio 16 kHz VAE, v1-16.pth from hkchengrex/MMAudio (models/mmaudio or models/ovi). "
                    f"'{DEMO_ENTRY}' is a tiny random decoder for the demo model.")),
                io.Combo.Input("vocoder_name", options=choices + [VOCODER_IN_VAE_FILE], tooltip=(
                    "The BigVGAN vocoder, best_netG.pt from hkchengrex/MMAudio. Pick the demo entry here too "
                    f"when the VAE is the demo one; '{VOCODER_IN_VAE_FILE}' for a single file holding "
                    "vae.* and vocoder.* weights.")),
            ],
            outputs=[OviAudioVAEType.Output("audio_vae", tooltip=(
                "The audio decoder, for Ovi Audio Decode; its encoder half (read from the VAE file when first used) "
                "for Ovi Audio Encode."))],
        )

    @classmethod
    def execute(cls, vae_name, vocoder_name):
        devices = bridge.devices_for("vae")
        if (vae_name == DEMO_ENTRY) != (vocoder_name == DEMO_ENTRY):
            raise OviInputError(f"pick '{DEMO_ENTRY}' for both the audio VAE and the vocoder, or a real file for both "
                                f"(got vae_name={vae_name!r}, vocoder_name={vocoder_name!r})")
        if vae_name == DEMO_ENTRY:
            decoder = build_demo_audio_decoder(device=devices.offload)
            encoder_source = DEMO_ENTRY
        else:
            vocoder = (None if vocoder_name == VOCODER_IN_VAE_FILE
                       else bridge.resolve_file(AUDIO_VAE_FOLDERS, vocoder_name, "vocoder"))
            encoder_source = bridge.resolve_file(AUDIO_VAE_FOLDERS, vae_name, "audio VAE")
            decoder = load_audio_decoder(encoder_source, vocoder, device=devices.offload)
        # the encoder half (Ovi Audio Encode) is loaded from the same file when first used
        return io.NodeOutput(OviAudioVAEHandle(decoder, f"{vae_name} + {vocoder_name}", devices, encoder_source))
