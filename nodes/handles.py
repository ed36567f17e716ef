"""The objects that travel on the pack's own sockets.

MODEL is core's (a ModelPatcher over native_model.OviAV; a plain stand-in without ComfyUI).
OVI_TEXT_ENCODER, OVI_VIDEO_VAE and OVI_AUDIO_VAE carry an ovi_core object plus how ComfyUI manages its
memory (bridge.ManagedModule). They are plain node outputs: ComfyUI's output cache keeps them while the loader's
inputs are unchanged and drops them (and the memory) when the loader runs again or the node is removed — there
is no cache of our own. OVI_TEXT carries the three text-encoder outputs of one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovi_core.errors import OviInputError
from ovi_core.fusion import OviFusion
from ovi_core.mmaudio_encoder import build_demo_audio_encoder, load_audio_encoder

from . import bridge
from .bridge import Devices, ManagedModule

MEMORY_MODES = ("all on GPU", "offload after use", "block swap")  # Ovi Model Loader's deprecated memory_mode values

# The pack's own socket types (V3 io.Custom types; the names are what saved workflows hold).
OviTextEncoderType = bridge.io.Custom("OVI_TEXT_ENCODER")
OviTextType = bridge.io.Custom("OVI_TEXT")
OviVideoVAEType = bridge.io.Custom("OVI_VIDEO_VAE")
OviAudioVAEType = bridge.io.Custom("OVI_AUDIO_VAE")


# ---- the MODEL -------------------------------------------------------------------------------------------------------
@dataclass
class PlainOviModel:
    """Without ComfyUI, what a MODEL's ``.model`` is (with ComfyUI: nodes/native_model.OviAV, a BaseModel): the
    fusion as ``diffusion_model`` plus the variant it was loaded as."""

    diffusion_model: torch.nn.Module
    ovi_variant: object
    ovi_name: str


@dataclass
class PlainModelPatcher:
    """Without ComfyUI, the object on a MODEL socket (with ComfyUI: a comfy ModelPatcher)."""

    model: PlainOviModel


def make_model(fusion: torch.nn.Module, variant, name: str, devices: Devices, slg_layer: int):
    """The MODEL of an ovi_core OviFusion: ComfyUI's ModelPatcher over native_model.OviAV (core samplers, lowvram,
    LoRA loaders, Ovi Sampler), or the plain stand-in without ComfyUI. The variant rides on the model (clones share
    it)."""
    if bridge.HAVE_COMFY:
        patcher = bridge.native_model().build_model_patcher(fusion, slg_layer=slg_layer, load_device=devices.load,
                                                            offload_device=devices.offload)
        patcher.model.ovi_variant, patcher.model.ovi_name = variant, name
        return patcher
    return PlainModelPatcher(PlainOviModel(fusion, variant, name))


def model_parts(model) -> tuple[torch.nn.Module, object]:
    """(OviFusion, variant) of a MODEL from Ovi Model Loader, or OviInputError naming what was connected."""

    inner = getattr(model, "model", None)
    fusion, variant = getattr(inner, "diffusion_model", None), getattr(inner, "ovi_variant", None)
    if not isinstance(fusion, OviFusion) or variant is None:
        raise OviInputError(f"model is a {type(inner or model).__name__}, not an Ovi model: connect Ovi Model "
                            "Loader's MODEL (optionally through core model patches such as LoraLoaderModelOnly)")
    return fusion, variant


@dataclass
class OviTextEncoderHandle:
    """umT5-XXL with Ovi's tokenisation (OVI_TEXT_ENCODER)."""

    encoder: object  # ovi_core.text_encoder.OviTextEncoder
    name: str
    devices: Devices

    def __post_init__(self):
        self.managed = ManagedModule(self.encoder.model, self.devices)

    def acquire(self):
        self.managed.use()
        return self.encoder


@dataclass
class OviVideoVAEHandle:
    """The Wan2.2 video VAE (OVI_VIDEO_VAE)."""

    vae: torch.nn.Module  # ovi_core.wan_vae.WanVideoVAE
    name: str
    devices: Devices

    def __post_init__(self):
        self.managed = ManagedModule(self.vae, self.devices)

    def acquire(self):
        return self.managed.use()


@dataclass
class OviAudioVAEHandle:
    """The MMAudio 16 kHz VAE decoder + BigVGAN vocoder (OVI_AUDIO_VAE), and the VAE's encoder half, loaded from the
    same file the first time something encodes audio (Ovi Audio Encode).

    encoder_source: the VAE file's path, DEMO_ENTRY for the demo encoder, or None (nothing to encode with)."""

    decoder: object  # ovi_core.mmaudio_vae.AudioDecoder
    name: str
    devices: Devices
    encoder_source: object = None

    def __post_init__(self):
        module = self.decoder if isinstance(self.decoder, torch.nn.Module) else None
        self.managed = ManagedModule(module, self.devices) if module is not None else None
        self._encoder = None

    def acquire(self):
        if self.managed is not None:
            self.managed.use()
        return self.decoder

    def acquire_encoder(self):
        """The MMAudio VAE encoder (ovi_core.mmaudio_encoder.AudioEncoder) on its compute device, loaded lazily."""
        if self._encoder is None:
            if self.encoder_source is None:
                raise OviInputError(f"the audio VAE {self.name!r} was loaded without a file to take the encoder from; "
                                    "load MMAudio's v1-16.pth (or ComfyUI's MMAudio VAE file) with Ovi Audio VAE Loader")
            if self.encoder_source == bridge.DEMO_ENTRY:
                encoder = build_demo_audio_encoder(device=self.devices.offload)
            else:
                encoder = load_audio_encoder(self.encoder_source, device=self.devices.offload)
            self._encoder = ManagedModule(encoder, self.devices)
        return self._encoder.use()


@dataclass
class OviText:
    """One prompt encoded for Ovi (OVI_TEXT): umT5-XXL states [tokens, 4096] of the prompt and both negatives.

    caption_style: the audio-caption spelling the prompt was written for ("audcap" / "audio_colon"), or None when
    unknown (text that came through ComfyUI's CLIPTextEncode)."""

    positive: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor
    caption_style: str | None = None
    source: str = ""

