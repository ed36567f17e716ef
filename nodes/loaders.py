"""Loader nodes: the fusion model, the text encoder, the video VAE, the audio VAE + vocoder.

Each lists the files of its model folders plus a built-in demo entry (tiny random-weight models from
ovi_core, no download) and returns a handle on one of the pack's own sockets.
"""

from __future__ import annotations

from . import bridge
from .bridge import DEMO_ENTRY
from .handles import MEMORY_MODES, OviAudioVAEHandle, OviModel, OviTextEncoderHandle, OviVideoVAEHandle

MODEL_FOLDERS = ("ovi", "diffusion_models")
TEXT_ENCODER_FOLDERS = ("text_encoders", "ovi")
VIDEO_VAE_FOLDERS = ("vae", "ovi")
AUDIO_VAE_FOLDERS = ("mmaudio", "ovi", "vae")
VOCODER_IN_VAE_FILE = "(inside the VAE file)"


def _variant_names() -> list[str]:
    from ovi_core.config import VARIANTS

    return list(VARIANTS)


class OviModelLoader:
    DESCRIPTION = ("Loads Ovi's fused audio+video model (chetwinlow1/Ovi model.safetensors, model_960x960*.safetensors, "
                   "or rkfg's model_fp8_e4m3fn.safetensors) from models/ovi or models/diffusion_models.")
    CATEGORY = "Ovi/loaders"
    RETURN_TYPES = ("OVI_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Ovi model, for Ovi Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (bridge.model_choices(MODEL_FOLDERS), {
                "tooltip": "The fused Ovi checkpoint (models/ovi or models/diffusion_models). "
                           f"'{DEMO_ENTRY}' needs no file: random weights, only to check the install."}),
            "variant": (["auto"] + _variant_names(), {
                "default": "auto",
                "tooltip": "Clip length, trained area and caption form of the checkpoint. auto: from the file name "
                           "(model.safetensors = 720x720_5s, model_960x960.safetensors = 960x960_5s, "
                           "model_960x960_10s.safetensors = 960x960_10s); set it when you renamed the file."}),
            "weight_dtype": (["auto", "bf16", "fp16", "fp8_e4m3fn"], {
                "default": "auto",
                "tooltip": "How weights are kept in memory. auto: fp8 files stay fp8, others use the compute dtype. "
                           "fp8_e4m3fn halves memory (each layer is upcast when it runs) at some quality cost."}),
            "attention": (["sdpa", "flash_attn", "sage"], {
                "default": "sdpa",
                "tooltip": "Attention kernel. sdpa = PyTorch (always available); flash_attn / sage when installed "
                           "(falls back to sdpa with a warning otherwise)."}),
            "memory_mode": (list(MEMORY_MODES), {
                "default": MEMORY_MODES[0],
                "tooltip": "all on GPU: the model stays loaded between runs (ComfyUI unloads it when memory is "
                           "needed). offload after use: moved to RAM after each sampling. block swap: the first "
                           "swap_blocks blocks wait in RAM and visit the GPU one at a time (least VRAM, slower)."}),
            "swap_blocks": ("INT", {
                "default": 0, "min": 0, "max": 64,
                "tooltip": "block swap only: how many of the 30 fused blocks stay in RAM."}),
        }}

    def load(self, model_name, variant, weight_dtype, attention, memory_mode, swap_blocks):
        devices = bridge.devices_for("diffusion")
        dtype = bridge.compute_dtype(devices.load)
        if model_name == DEMO_ENTRY:
            from ovi_core.demo import DEMO_VARIANT, build_demo_fusion

            net, variant_obj = build_demo_fusion(device=devices.offload), DEMO_VARIANT  # float32: it is tiny
            net.set_attention_backend(attention)
        else:
            from ovi_core.config import get_variant
            from ovi_core.weights import load_fusion_model

            path = bridge.resolve_file(MODEL_FOLDERS, model_name, "Ovi model")
            net, info = load_fusion_model(path, device=devices.offload, dtype=dtype, weight_dtype=weight_dtype,
                                          variant=None if variant == "auto" else variant, attention=attention)
            variant_obj = get_variant(info.variant)
        return (OviModel(net, variant_obj, model_name, devices, memory_mode, swap_blocks),)


class OviTextEncoderLoader:
    DESCRIPTION = ("Loads umT5-XXL for Ovi: ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled.safetensors or Wan's "
                   "models_t5_umt5-xxl-enc-bf16.pth (with its google/umt5-xxl tokenizer folder next to it).")
    CATEGORY = "Ovi/loaders"
    RETURN_TYPES = ("OVI_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, for Ovi Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (bridge.model_choices(TEXT_ENCODER_FOLDERS), {
                "tooltip": "The umT5-XXL file (models/text_encoders or models/ovi) — the same one Wan uses. "
                           f"'{DEMO_ENTRY}' is a tiny random encoder for the demo model."}),
            "precision": (["auto", "bf16", "fp32"], {
                "default": "auto",
                "tooltip": "Compute dtype. auto: bf16 on a GPU (as Ovi), fp32 on the CPU. fp8 files keep their fp8 "
                           "weights either way."}),
        }}

    def load(self, text_encoder_name, precision):
        devices = bridge.devices_for("text_encoder")
        dtype = bridge.compute_dtype(devices.load, precision)
        if text_encoder_name == DEMO_ENTRY:
            from ovi_core.demo import build_demo_text_encoder

            encoder = build_demo_text_encoder(device=devices.offload)
        else:
            from ovi_core.text_encoder import load_text_encoder

            path = bridge.resolve_file(TEXT_ENCODER_FOLDERS, text_encoder_name, "text encoder")
            encoder = load_text_encoder(path, device=devices.offload, dtype=dtype)
        return (OviTextEncoderHandle(encoder, text_encoder_name, devices),)


class OviVideoVAELoader:
    DESCRIPTION = ("Loads the Wan2.2 video VAE (ComfyUI's wan2.2_vae.safetensors or Wan's Wan2.2_VAE.pth) for Ovi "
                   "Video Decode and image-to-video.")
    CATEGORY = "Ovi/loaders"
    RETURN_TYPES = ("OVI_VIDEO_VAE",)
    RETURN_NAMES = ("video_vae",)
    OUTPUT_TOOLTIPS = ("The video VAE, for Ovi Video Decode and Ovi Sampler's start image.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (bridge.model_choices(VIDEO_VAE_FOLDERS), {
                "tooltip": "The 48-channel Wan2.2 VAE (models/vae or models/ovi), the file core's VAELoader uses "
                           f"for Wan2.2-5B. '{DEMO_ENTRY}' is a tiny random VAE for the demo model."}),
            "precision": (["auto", "fp32", "bf16", "fp16"], {
                "default": "auto",
                "tooltip": "Compute dtype. auto: bf16 on a GPU that runs it well, fp32 on the CPU."}),
        }}

    def load(self, vae_name, precision):
        devices = bridge.devices_for("vae")
        dtype = bridge.compute_dtype(devices.load, precision)
        if vae_name == DEMO_ENTRY:
            from ovi_core.demo import build_demo_video_vae

            vae = build_demo_video_vae(device=devices.offload)
        else:
            from ovi_core.wan_vae import load_video_vae

            vae = load_video_vae(bridge.resolve_file(VIDEO_VAE_FOLDERS, vae_name, "video VAE"),
                                 device=devices.offload, dtype=dtype)
        return (OviVideoVAEHandle(vae, vae_name, devices),)


class OviAudioVAELoader:
    DESCRIPTION = ("Loads Ovi's audio decoder: the MMAudio 16 kHz VAE (v1-16.pth) and the BigVGAN vocoder "
                   "(best_netG.pt), from models/mmaudio or models/ovi.")
    CATEGORY = "Ovi/loaders"
    RETURN_TYPES = ("OVI_AUDIO_VAE",)
    RETURN_NAMES = ("audio_vae",)
    OUTPUT_TOOLTIPS = ("The audio decoder, for Ovi Audio Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = bridge.model_choices(AUDIO_VAE_FOLDERS)
        return {"required": {
            "vae_name": (choices, {
                "tooltip": "The MMAudio 16 kHz VAE, v1-16.pth from hkchengrex/MMAudio (models/mmaudio or models/ovi). "
                           f"'{DEMO_ENTRY}' is a tiny random decoder for the demo model."}),
            "vocoder_name": (choices + [VOCODER_IN_VAE_FILE], {
                "tooltip": "The BigVGAN vocoder, best_netG.pt from hkchengrex/MMAudio. Pick the demo entry here too "
                           f"when the VAE is the demo one; '{VOCODER_IN_VAE_FILE}' for a single file holding "
                           "vae.* and vocoder.* weights."}),
        }}

    def load(self, vae_name, vocoder_name):
        from ovi_core.errors import OviInputError

        devices = bridge.devices_for("vae")
        if (vae_name == DEMO_ENTRY) != (vocoder_name == DEMO_ENTRY):
            raise OviInputError(f"pick '{DEMO_ENTRY}' for both the audio VAE and the vocoder, or a real file for both "
                                f"(got vae_name={vae_name!r}, vocoder_name={vocoder_name!r})")
        if vae_name == DEMO_ENTRY:
            from ovi_core.demo import build_demo_audio_decoder

            decoder = build_demo_audio_decoder(device=devices.offload)
        else:
            from ovi_core.mmaudio_vae import load_audio_decoder

            vocoder = (None if vocoder_name == VOCODER_IN_VAE_FILE
                       else bridge.resolve_file(AUDIO_VAE_FOLDERS, vocoder_name, "vocoder"))
            decoder = load_audio_decoder(bridge.resolve_file(AUDIO_VAE_FOLDERS, vae_name, "audio VAE"), vocoder,
                                         device=devices.offload)
        return (OviAudioVAEHandle(decoder, f"{vae_name} + {vocoder_name}", devices),)
