"""The objects that travel on the pack's own sockets.

OVI_MODEL, OVI_TEXT_ENCODER, OVI_VIDEO_VAE and OVI_AUDIO_VAE carry an ovi_core object plus how ComfyUI manages its
memory (bridge.ManagedModule). They are plain node outputs: ComfyUI's output cache keeps them while the loader's
inputs are unchanged and drops them (and the memory) when the loader runs again or the node is removed — there
is no cache of our own. OVI_TEXT carries the three text-encoder outputs of one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bridge import Devices, ManagedModule, free_memory_for

MEMORY_MODES = ("all on GPU", "offload after use", "block swap")


@dataclass
class OviModel:
    """The fusion model (OVI_MODEL)."""

    model: torch.nn.Module  # ovi_core.fusion.OviFusion
    variant: object  # ovi_core.config.Variant
    name: str  # file name or the demo entry
    devices: Devices
    memory_mode: str = "all on GPU"
    swap_blocks: int = 0

    def __post_init__(self):
        self.managed = None if self.memory_mode == "block swap" else ManagedModule(self.model, self.devices)

    def acquire(self) -> torch.nn.Module:
        """The model, on its compute device, ready to sample."""
        if self.managed is not None:
            return self.managed.use()
        n = self.swap_blocks
        blocks = self.model.cfg.num_layers
        resident = _module_bytes(self.model) * (blocks - min(n, blocks)) // max(blocks, 1)
        free_memory_for(resident, self.devices.load)
        return self.model.enable_block_swap(n, self.devices.load, self.devices.offload)

    def release(self) -> None:
        """After sampling: offload now in the offload / block-swap modes; "all on GPU" leaves it to ComfyUI."""
        if self.memory_mode == "offload after use":
            self.managed.release()
        elif self.memory_mode == "block swap":
            self.model.enable_block_swap(0, self.devices.offload, self.devices.offload)


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
    """The MMAudio 16 kHz VAE decoder + BigVGAN vocoder (OVI_AUDIO_VAE)."""

    decoder: object  # ovi_core.mmaudio_vae.AudioDecoder
    name: str
    devices: Devices

    def __post_init__(self):
        module = self.decoder if isinstance(self.decoder, torch.nn.Module) else None
        self.managed = ManagedModule(module, self.devices) if module is not None else None

    def acquire(self):
        if self.managed is not None:
            self.managed.use()
        return self.decoder


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


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())
