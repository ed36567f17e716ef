"""The fusion model against the golden vectors, at full size on the meta device, and its behaviours."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from conformance.cases import forward
from ovi_core.config import FusionConfig
from ovi_core.errors import OviInputError
from ovi_core.fusion import OviFusion


@pytest.mark.parametrize("case", [0, 1, 2])
def test_forward_golden_cases(golden_dir, case):
    outcome = forward.run(golden_dir / f"forward_case_{case}.safetensors")
    assert outcome.passed, outcome
    assert outcome.max_abs_err < 1e-5  # measured ~1.6e-6; the reference's fp32-vs-fp64 gap is 2.75e-6


def _released_keys(golden_dir):
    """Expand the released key list (one line per pattern, x30 for per-block keys)."""
    keys = {}
    for line in (golden_dir.parent / "ovi_released_keys.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or "." not in parts[0]:
            continue
        shape = tuple(int(s) for s in re.findall(r"\d+", parts[1]))
        count = int(parts[3].lstrip("x"))
        for i in range(count):
            keys[parts[0].replace("{i}", str(i))] = shape
    return keys


def test_full_size_keys_and_parameter_count(golden_dir):
    with torch.device("meta"):
        model = OviFusion(FusionConfig.full())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _released_keys(golden_dir)
    assert len(ours) == 2073
    assert sum(p.numel() for p in model.parameters()) == 11_660_753_108
    assert sum(p.numel() for p in model.audio_model.parameters()) == 6_094_273_556


def _case(golden_dir, n):
    return load_file(str(golden_dir / f"forward_case_{n}.safetensors"))


def test_bf16_compute_is_within_bf16_tolerance(golden_dir, tiny_fusion):
    d = _case(golden_dir, 0)
    try:
        tiny_fusion.set_compute_dtype(torch.bfloat16)
        v, a = tiny_fusion(d["in.video_latent"], d["in.audio_latent"], d["in.t"], [d["in.video_context"]],
                           [d["in.audio_context"]])
    finally:
        tiny_fusion.set_compute_dtype(torch.float32)
    for got, want in ((v[0], d["out.video"]), (a[0], d["out.audio"])):
        rel = (got - want).norm() / want.norm()
        assert rel < 0.03, rel  # the golden README's bound for bf16 implementations
        assert rel > 0  # it really ran in bf16


def test_batched_cfg_with_skip_mask_equals_two_passes(golden_dir, tiny_fusion):
    d = _case(golden_dir, 1)
    v, a, t = d["in.video_latent"], d["in.audio_latent"], d["in.t"]
    ctx_pos, ctx_vneg, ctx_aneg = d["in.video_context"], d["in.audio_context"], d["in.video_context"][:3]
    pos = tiny_fusion(v, a, t, [ctx_pos], [ctx_pos])
    neg = tiny_fusion(v, a, t, [ctx_vneg], [ctx_aneg], slg_layer=1)
    text = tiny_fusion.prepare_text([ctx_pos, ctx_vneg], [ctx_pos, ctx_aneg])
    bv, ba = tiny_fusion(torch.stack([v, v]), torch.stack([a, a]), t, text=text, slg_layer=1,
                         skip_mask=torch.tensor([False, True]))
    # not bit-exact: BLAS blocks a batch of two differently from a batch of one (float32 rounding, ~2e-6)
    torch.testing.assert_close(bv[0], pos[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(bv[1], neg[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ba[0], pos[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ba[1], neg[1][0], atol=1e-5, rtol=0)
    assert (pos[0] - neg[0]).abs().max() > 1e-2  # the two passes really differ


def test_prepared_text_equals_per_call_text(golden_dir, tiny_fusion):
    d = _case(golden_dir, 0)
    args = (d["in.video_latent"], d["in.audio_latent"], d["in.t"])
    direct = tiny_fusion(*args, [d["in.video_context"]], [d["in.audio_context"]])
    cached = tiny_fusion(*args, text=tiny_fusion.prepare_text([d["in.video_context"]], [d["in.audio_context"]]))
    assert torch.equal(direct[0], cached[0]) and torch.equal(direct[1], cached[1])


def test_zero_padded_512_row_context_equals_trimmed_context(golden_dir, tiny_fusion):
    # ComfyUI's CLIPTextEncode hands over [1, 512, 4096] with padding rows zeroed: the same thing.
    d = _case(golden_dir, 0)
    padded = torch.zeros(1, 512, 4096)
    padded[0, : d["in.video_context"].shape[0]] = d["in.video_context"]
    args = (d["in.video_latent"], d["in.audio_latent"], d["in.t"])
    a = tiny_fusion(*args, padded, [d["in.audio_context"]])
    b = tiny_fusion(*args, [d["in.video_context"]], [d["in.audio_context"]])
    assert torch.equal(a[0], b[0])


def test_fusion_is_bidirectional(golden_dir, tiny_fusion):
    d = _case(golden_dir, 0)
    ctx = ([d["in.video_context"]], [d["in.audio_context"]])
    base = tiny_fusion(d["in.video_latent"], d["in.audio_latent"], d["in.t"], *ctx)
    moved_audio = tiny_fusion(d["in.video_latent"], d["in.audio_latent"] + 0.5, d["in.t"], *ctx)
    moved_video = tiny_fusion(d["in.video_latent"] + 0.5, d["in.audio_latent"], d["in.t"], *ctx)
    assert (moved_audio[0] - base[0]).abs().max() > 0.05  # audio input changes the video output
    assert (moved_video[1] - base[1]).abs().max() > 0.05  # and vice versa


def test_first_frame_is_clean_only_changes_time_of_first_frame_tokens(golden_dir, tiny_fusion):
    d = _case(golden_dir, 2)
    args = (d["in.video_latent"], d["in.audio_latent"], d["in.t"], [d["in.video_context"]], [d["in.audio_context"]])
    clean = tiny_fusion(*args, first_frame_is_clean=True)
    plain = tiny_fusion(*args)
    assert (clean[0] - plain[0]).abs().max() > 1e-2
    # with t = 0 everywhere, marking the first frame clean changes nothing (up to float32 rounding of a
    # time embedding computed for two timesteps instead of one)
    zero = (d["in.video_latent"], d["in.audio_latent"], torch.tensor([0]), *args[3:])
    torch.testing.assert_close(tiny_fusion(*zero, first_frame_is_clean=True)[0], tiny_fusion(*zero)[0], atol=1e-5, rtol=0)


def test_per_modality_timesteps_and_clean_prefixes(golden_dir, tiny_fusion):
    """audio_t = t and clean_video_frames = 1 are the defaults / first_frame_is_clean exactly; a clean prefix covering
    a whole modality equals that modality at t = 0 while the other keeps its own t."""
    d = _case(golden_dir, 2)
    video, audio, t = d["in.video_latent"], d["in.audio_latent"], d["in.t"]
    text = tiny_fusion.prepare_text([d["in.video_context"]], [d["in.audio_context"]])
    run = lambda *a, **kw: tiny_fusion(*a, text=text, **kw)  # noqa: E731
    for first in (False, True):
        ref = run(video, audio, t, first_frame_is_clean=first)
        got = run(video, audio, t, audio_t=t, clean_video_frames=int(first))
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    zero = torch.zeros_like(t)
    frames, steps = video.shape[-3], audio.shape[-2]
    got = run(video, audio, t, clean_video_frames=frames)  # video all clean, audio at t
    torch.testing.assert_close(got, run(video, audio, zero, audio_t=t), atol=1e-5, rtol=0)
    got = run(video, audio, t, clean_audio_steps=steps)  # audio all clean, video at t
    torch.testing.assert_close(got, run(video, audio, t, audio_t=zero), atol=1e-5, rtol=0)
    assert (run(video, audio, t, clean_audio_steps=2)[1] - run(video, audio, t)[1]).abs().max() > 1e-3
    with pytest.raises(OviInputError, match="clean prefixes"):
        run(video, audio, t, clean_audio_steps=steps + 1)


def test_bad_inputs_get_clear_errors(tiny_fusion):
    ctx = [torch.zeros(3, 4096)]
    a = torch.zeros(1, 8, 20)
    with pytest.raises(OviInputError, match="16-channel"):
        tiny_fusion(torch.zeros(1, 16, 2, 4, 4), a, 500, ctx, ctx)
    with pytest.raises(OviInputError, match="even"):
        tiny_fusion(torch.zeros(1, 48, 2, 5, 4), a, 500, ctx, ctx)
    with pytest.raises(OviInputError, match=r"\[B, L, 20\]"):
        tiny_fusion(torch.zeros(1, 48, 2, 4, 4), torch.zeros(1, 20, 8), 500, ctx, ctx)
    with pytest.raises(OviInputError, match="at most 512"):
        tiny_fusion(torch.zeros(1, 48, 2, 4, 4), a, 500, [torch.zeros(513, 4096)], ctx)
    with pytest.raises(OviInputError, match="4096"):
        tiny_fusion(torch.zeros(1, 48, 2, 4, 4), a, 500, [torch.zeros(3, 768)], ctx)


def test_reference_json_round_trip(golden_dir):
    import json

    data = json.loads((golden_dir / "tiny_config.json").read_text())
    cfg = FusionConfig.from_reference_json(data)
    assert cfg == FusionConfig.tiny()
    assert FusionConfig.from_reference_json(cfg.to_reference_json()) == cfg
    assert cfg.audio.temporal_rope_scale == pytest.approx(0.19676)


def test_ffn_chunking_and_block_swap_keep_the_numbers(golden_dir, tiny_fusion):
    d = _case(golden_dir, 1)
    args = (d["in.video_latent"], d["in.audio_latent"], d["in.t"], [d["in.video_context"]], [d["in.audio_context"]])
    base = tiny_fusion(*args, slg_layer=1)
    try:
        tiny_fusion.ffn_chunk = 5  # 24 video tokens, 11 audio tokens: several uneven chunks
        tiny_fusion.enable_block_swap(2, "cpu", "cpu")
        got = tiny_fusion(*args, slg_layer=1)
    finally:
        tiny_fusion.ffn_chunk = 0
        tiny_fusion.enable_block_swap(0, "cpu")
    torch.testing.assert_close(got[0], base[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], base[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("frames,side,audio_len", [(31, 44, 157), (61, 60, 314)])  # 720x720_5s, 960x960_10s
def test_full_size_forward_runs_on_the_meta_device(frames, side, audio_len):
    """Shapes through the real 30-block model at the released latent sizes (I2V, batched CFG with SLG)."""
    with torch.device("meta"):
        model = OviFusion(FusionConfig.full())
    model.set_compute_dtype(torch.bfloat16)
    video = torch.empty(2, 48, frames, side, side, device="meta")
    audio = torch.empty(2, audio_len, 20, device="meta")
    ctx = torch.empty(2, 40, 4096, device="meta")
    text = model.prepare_text(ctx, ctx)
    v, a = model(video, audio, torch.tensor([999, 999]), text=text, first_frame_is_clean=True, slg_layer=11,
                 skip_mask=torch.tensor([False, True]))
    assert v.shape == video.shape and a.shape == audio.shape
    assert v.dtype == a.dtype == torch.float32


class _CountingOps:
    """A caller's layer namespace (as comfy.ops.manual_cast): plain torch layers that count their instances."""

    counts: dict[str, int] = {}

    @classmethod
    def reset(cls):
        cls.counts = {}

    @staticmethod
    def _counted(base):
        class Counted(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                _CountingOps.counts[base.__name__] = _CountingOps.counts.get(base.__name__, 0) + 1

        return Counted


for _name in ("Linear", "Conv1d", "Conv3d", "LayerNorm", "RMSNorm"):
    setattr(_CountingOps, _name, _CountingOps._counted(getattr(torch.nn, _name)))


def test_caller_operations_build_the_same_model(golden_dir, tiny_fusion):
    from ovi_core.weights import load_fusion_model

    _CountingOps.reset()
    model, _ = load_fusion_model(golden_dir / "tiny_fusion.safetensors", dtype=torch.float32,
                                 config=FusionConfig.tiny(), variant="720x720_5s", operations=_CountingOps)
    layers = FusionConfig.tiny().num_layers
    # per tower: 12 Linear per block + text (2), time (2), projection, head; 4 LayerNorm + 5 RMSNorm per block
    assert _CountingOps.counts == {"Linear": 2 * (12 * layers + 6), "Conv3d": 1, "Conv1d": 4,
                                   "LayerNorm": 2 * (4 * layers + 1), "RMSNorm": 2 * 5 * layers}
    assert isinstance(model.video_model.blocks[0].cross_attn.k_fusion, _CountingOps.Linear)
    assert list(model.state_dict()) == list(tiny_fusion.state_dict())  # the same checkpoint keys
    for case in (0, 2):  # plain, and image-to-video with SLG
        d = _case(golden_dir, case)
        args = (d["in.video_latent"], d["in.audio_latent"], d["in.t"], [d["in.video_context"]], [d["in.audio_context"]])
        kw = dict(first_frame_is_clean=bool(d["in.first_frame_is_clean"].item()), slg_layer=int(d["in.slg_layer"].item()))
        got, want = model(*args, **kw), tiny_fusion(*args, **kw)
        torch.testing.assert_close(got[0], want[0], atol=2e-6, rtol=0)
        torch.testing.assert_close(got[1], want[1], atol=2e-6, rtol=0)
        torch.testing.assert_close(got[0][0], d["out.video"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_embedding_matmul_equals_the_convolution(dtype):
    from ovi_core.layers import Conv3d

    conv = Conv3d(48, 64, kernel_size=(1, 2, 2), stride=(1, 2, 2)).to(dtype)
    conv.compute_dtype = dtype
    x = torch.randn(2, 48, 3, 6, 8)
    tokens, grid = conv.patch_tokens(x)
    ref = conv(x)  # [B, 64, 3, 3, 4]
    assert grid == tuple(ref.shape[2:]) and tokens.dtype == dtype
    torch.testing.assert_close(tokens, ref.flatten(2).transpose(1, 2), atol=1e-5 if dtype == torch.float32 else 2e-2,
                               rtol=0 if dtype == torch.float32 else 1e-2)


def test_forward_computes_on_the_inputs_device_not_the_parameters():
    """ComfyUI's lowvram keeps some parameters (modulation tables, norms) in RAM while the forward runs on the GPU:
    every parameter must follow the input's device. Parameters on the CPU, latents and text on the meta device: the
    whole forward (I2V, SLG rows, a clean audio prefix, a fusion cut) runs on meta."""
    model = OviFusion(FusionConfig.tiny())
    video, audio = torch.empty(2, 48, 3, 4, 4, device="meta"), torch.empty(2, 13, 20, device="meta")
    ctx = torch.empty(2, 5, 4096, device="meta")
    text = model.prepare_text(ctx, ctx, device="meta")
    v, a = model(video, audio, torch.tensor([999, 999]), text=text, first_frame_is_clean=True, slg_layer=1,
                 skip_mask=torch.tensor([False, True]), audio_t=torch.tensor([500.0, 500.0]), clean_audio_steps=2,
                 fusion_cut="audio_to_video")
    assert v.device.type == a.device.type == "meta" and v.shape == video.shape and a.shape == audio.shape
    assert model.device.type == "cpu"
