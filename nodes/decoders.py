"""Decode nodes (V3): video LATENT -> IMAGE frames, audio LATENT -> AUDIO."""

from __future__ import annotations

from ovi_core.media import clip_to_images

from . import bridge
from .bridge import io
from .convert import audio_latent_from_comfy, audio_to_comfy, video_latent_from_comfy
from .handles import OviAudioVAEType, OviVideoVAEType

SAMPLE_RATES = ("16000", "22050", "24000", "32000", "44100", "48000")


def sample_rate_of(value) -> int | None:
    """The rate a sample_rate input asks for — the combo's text ("16000") or the same number (16000, as API prompts
    and other nodes' INT outputs give it) — or None when it is not one of SAMPLE_RATES."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return int(text) if text in SAMPLE_RATES else None


def sample_rate_problem(value) -> str | None:
    if sample_rate_of(value) is None:
        return (f"sample_rate {value!r} is not offered; pick one of {', '.join(SAMPLE_RATES)} Hz (16000 is what Ovi "
                "makes, the others are resampled)")
    return None
OVERLAP = 16  # latent pixels shared by neighbouring tiles (256 picture pixels): 5e-4 from untiled on the tiny VAE (8: 3e-2)


class OviVideoDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviVideoDecode", display_name="Ovi Video Decode", category="Ovi/decode",
            description="Decodes an Ovi (Wan2.2) video latent into frames: an IMAGE batch, one image per frame.",
            inputs=[
                OviVideoVAEType.Input("video_vae", tooltip="From Ovi Video VAE Loader."),
                io.Latent.Input("video_latent", tooltip=(
                    "Ovi Sampler's video_latent (any 48-channel Wan2.2 video latent).")),
                io.Boolean.Input("tiled", default=False, tooltip=(
                    "Decode in overlapping spatial tiles: much less memory, seams cross-faded (the low-resolution "
                    "trunk still sees whole frames).")),
                io.Int.Input("tile_size", default=512, min=384, max=4096, step=32,
                             tooltip="Tile side in pixels when tiled (tiles overlap by 256 pixels)."),
            ],
            outputs=[io.Image.Output("frames", tooltip=(
                "The frames [frames, height, width, 3], 0..1 — for Ovi Mux, CreateVideo, SaveImage, ..."))],
        )

    @classmethod
    def execute(cls, video_vae, video_latent, tiled, tile_size):
        latent = video_latent_from_comfy(video_latent)
        tile = (tile_size // 16, tile_size // 16) if tiled else None
        frames = video_vae.acquire().decode(latent, tile=tile, tile_overlap=OVERLAP)  # [B, 3, T, H, W] in [-1, 1]
        return io.NodeOutput(clip_to_images(frames).to(bridge.intermediate_device()))


class OviAudioDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="OviAudioDecode", display_name="Ovi Audio Decode", category="Ovi/decode",
            description="Decodes an Ovi audio latent into a waveform (MMAudio VAE + BigVGAN), 16 kHz or resampled.",
            inputs=[
                OviAudioVAEType.Input("audio_vae", tooltip="From Ovi Audio VAE Loader."),
                io.Latent.Input("audio_latent", tooltip="Ovi Sampler's audio_latent."),
                io.Combo.Input("sample_rate", options=list(SAMPLE_RATES), default="16000", tooltip=(
                    "Output sample rate in Hz. 16000 is what Ovi makes; other rates are resampled (band-limited).")),
            ],
            outputs=[io.Audio.Output("audio", tooltip=(
                "The sound {waveform [1, 1, samples], sample_rate} — for Ovi Mux, PreviewAudio, SaveAudio, ..."))],
        )

    @classmethod
    def validate_inputs(cls, sample_rate=None):
        """Takes the combo's text or the same number (ComfyUI itself would refuse 16000 as "not in list"); a missing
        input is left to ComfyUI, a linked one (None) is checked when the node runs."""
        if sample_rate is None:
            return True
        return sample_rate_problem(sample_rate) or True

    @classmethod
    def execute(cls, audio_vae, audio_latent, sample_rate):
        from ovi_core.errors import OviInputError

        if (msg := sample_rate_problem(sample_rate)) is not None:
            raise OviInputError(msg)
        latent = audio_latent_from_comfy(audio_latent)
        decoder = audio_vae.acquire()
        waveform = decoder.decode(latent).float()  # [B, 1, 512 L] at decoder.sample_rate
        rate = sample_rate_of(sample_rate)
        if rate != decoder.sample_rate:
            from ovi_core.audio_resample import resample_audio

            waveform = resample_audio(waveform, decoder.sample_rate, rate)
        return io.NodeOutput(audio_to_comfy(waveform, rate, bridge.intermediate_device()))
