"""Configs of the Ovi fusion model and the table of released variants.

Values follow character-ai/Ovi (Apache-2.0): ovi/configs/model/dit/{video,audio}.json and the engine's
model table. Configs are frozen dataclasses; sizes are read from weight shapes where the file tells them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from ovi_core.errors import OviInputError


@dataclass(frozen=True)
class TowerConfig:
    """One DiT tower (a Wan2.2-TI2V-5B-shaped WanModel)."""

    kind: Literal["video", "audio"]
    dim: int = 3072
    ffn_dim: int = 14336
    num_heads: int = 24
    num_layers: int = 30
    in_dim: int = 48
    out_dim: int = 48
    patch_size: tuple[int, ...] = (1, 2, 2)
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    temporal_rope_scale: float = 1.0  # audio: 0.19676 (audio latents per video latent frame)

    def __post_init__(self):
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise OviInputError(f"dim {self.dim} must split into {self.num_heads} heads of even size")
        if not (self.qk_norm and self.cross_attn_norm):
            raise OviInputError("Ovi towers use qk_norm=True and cross_attn_norm=True; other settings are not supported")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_mlp_hidden(self) -> int:
        """Hidden width of the audio patch embedding's ConvMLP: 256 * ceil(int(2 * 4 * dim / 3) / 256)."""
        hidden = int(2 * (4 * self.dim) / 3)
        return 256 * ((hidden + 255) // 256)


def _video_tower(**kw) -> TowerConfig:
    return TowerConfig(kind="video", in_dim=48, out_dim=48, patch_size=(1, 2, 2), **kw)


def _audio_tower(**kw) -> TowerConfig:
    return TowerConfig(kind="audio", in_dim=20, out_dim=20, patch_size=(1,), temporal_rope_scale=0.19676, **kw)


@dataclass(frozen=True)
class FusionConfig:
    """The fused twin-tower model: block i of the video tower is fused with block i of the audio tower."""

    video: TowerConfig = field(default_factory=_video_tower)
    audio: TowerConfig = field(default_factory=_audio_tower)

    def __post_init__(self):
        if self.video.num_layers != self.audio.num_layers or self.video.dim != self.audio.dim:
            raise OviInputError(
                f"the towers must have the same depth and width, got video {self.video.num_layers}x{self.video.dim} "
                f"and audio {self.audio.num_layers}x{self.audio.dim}"
            )
        if self.video.num_heads != self.audio.num_heads:
            raise OviInputError("the towers must have the same number of heads (the fusion attention shares heads)")

    @property
    def num_layers(self) -> int:
        return self.video.num_layers

    @classmethod
    def full(cls) -> FusionConfig:
        """The released size (11,660,753,108 parameters)."""
        return cls()

    @classmethod
    def scaled(cls, dim: int, ffn_dim: int, num_heads: int, num_layers: int) -> FusionConfig:
        """Same architecture at another size (tests, benchmarks, the demo model)."""
        kw = dict(dim=dim, ffn_dim=ffn_dim, num_heads=num_heads, num_layers=num_layers)
        return cls(video=_video_tower(**kw), audio=_audio_tower(**kw))

    @classmethod
    def tiny(cls) -> FusionConfig:
        """The golden vectors' tiny config: dim 64, ffn 128, 2 heads, 3 layers."""
        return cls.scaled(dim=64, ffn_dim=128, num_heads=2, num_layers=3)

    @classmethod
    def from_reference_json(cls, data: dict) -> FusionConfig:
        """From the reference's WanModel kwargs: {"video_config": {...}, "audio_config": {...}} (tiny_config.json)."""
        try:
            return cls(video=_tower_from_kwargs(data["video_config"]), audio=_tower_from_kwargs(data["audio_config"]))
        except KeyError as exc:
            raise OviInputError(f"a reference config needs 'video_config' and 'audio_config' entries; missing {exc}") from None

    def to_reference_json(self) -> dict:
        return {"video_config": _tower_to_kwargs(self.video), "audio_config": _tower_to_kwargs(self.audio)}


_KIND_BY_MODEL_TYPE = {"ti2v": "video", "t2v": "video", "t2a": "audio"}


def _tower_from_kwargs(kw: dict) -> TowerConfig:
    model_type = kw.get("model_type", "t2v")
    if model_type not in _KIND_BY_MODEL_TYPE:
        raise OviInputError(f"model_type {model_type!r} is not an Ovi tower (expected ti2v, t2v or t2a)")
    kind = _KIND_BY_MODEL_TYPE[model_type]
    base = _video_tower() if kind == "video" else _audio_tower()
    window = tuple(kw.get("window_size", (-1, -1)))
    if window != (-1, -1):
        raise OviInputError(f"window_size {list(window)} is not supported: Ovi uses global attention [-1, -1]")
    return replace(
        base,
        dim=kw.get("dim", 2048),
        ffn_dim=kw.get("ffn_dim", 8192),
        num_heads=kw.get("num_heads", 16),
        num_layers=kw.get("num_layers", 32),
        in_dim=kw.get("in_dim", base.in_dim),
        out_dim=kw.get("out_dim", base.out_dim),
        patch_size=tuple(kw.get("patch_size", base.patch_size)),
        freq_dim=kw.get("freq_dim", 256),
        text_dim=kw.get("text_dim", 4096),
        text_len=kw.get("text_len", 512),
        eps=kw.get("eps", 1e-6),
        qk_norm=kw.get("qk_norm", True),
        cross_attn_norm=kw.get("cross_attn_norm", True),
        temporal_rope_scale=kw.get("temporal_rope_scaling_factor", 1.0),
    )


def _tower_to_kwargs(t: TowerConfig) -> dict:
    return {
        "model_type": "ti2v" if t.kind == "video" else "t2a",
        "patch_size": list(t.patch_size),
        "dim": t.dim,
        "ffn_dim": t.ffn_dim,
        "freq_dim": t.freq_dim,
        "num_heads": t.num_heads,
        "num_layers": t.num_layers,
        "in_dim": t.in_dim,
        "out_dim": t.out_dim,
        "text_dim": t.text_dim,
        "text_len": t.text_len,
        "window_size": [-1, -1],
        "qk_norm": t.qk_norm,
        "cross_attn_norm": t.cross_attn_norm,
        "eps": t.eps,
        "temporal_rope_scaling_factor": t.temporal_rope_scale,
    }


FPS = 24  # every released variant's frame rate (the reference saves its mp4s at 24 fps)


@dataclass(frozen=True)
class Variant:
    """A released checkpoint: same architecture, different clip length, target area and caption form."""

    name: str
    filename: str
    video_latent_length: int  # latent frames; pixel frames = 1 + 4 * (n - 1)
    audio_latent_length: int  # MMAudio latents; samples = 512 * n at 16 kHz
    target_area: int  # height * width the model was trained at
    caption_style: Literal["audcap", "audio_colon"]  # <AUDCAP>...<ENDAUDCAP> or a trailing "Audio: ..."
    fps: int = FPS

    @property
    def num_frames(self) -> int:
        return 1 + 4 * (self.video_latent_length - 1)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("720x720_5s", "model.safetensors", 31, 157, 720 * 720, "audcap"),
        Variant("960x960_5s", "model_960x960.safetensors", 31, 157, 960 * 960, "audio_colon"),
        Variant("960x960_10s", "model_960x960_10s.safetensors", 61, 314, 960 * 960, "audio_colon"),
    )
}
DEFAULT_VARIANT = "720x720_5s"  # the one default (ovi_core.knobs.VARIANT reads it; config cannot import knobs)
FP8_FILENAME = "model_fp8_e4m3fn.safetensors"  # rkfg/Ovi-fp8_quantized, a 720x720_5s model


def get_variant(name: str | Variant) -> Variant:
    """The released variant called ``name`` (a Variant is returned as it is: callers that resolved it pass it on)."""
    if isinstance(name, Variant):
        return name
    try:
        return VARIANTS[name]
    except KeyError:
        raise OviInputError(f"unknown Ovi variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
