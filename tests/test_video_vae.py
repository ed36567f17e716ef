"""Wan2.2 video VAE: golden decode/encode, streaming, tiling, file layouts and error messages."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.errors import OviInputError, OviInterrupted, WrongFileError
from ovi_core.wan_vae import (
    WAN22_LATENT_MEAN,
    WanVAEConfig,
    _blend_mask,
    _tile_starts,
    build_demo_video_vae,
    load_video_vae,
    video_vae_from_state_dict,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_sd(golden_dir) -> dict[str, torch.Tensor]:
    """The golden tiny VAE: decoder file + encoder file (disjoint keys) = one original-layout state dict."""
    sd = load_file(str(golden_dir / "tiny_wan22_vae_decoder.safetensors"))
    sd.update(load_file(str(golden_dir / "tiny_wan22_vae_encoder.safetensors")))
    return sd


@pytest.fixture(scope="module")
def tiny_vae(tiny_sd):
    return video_vae_from_state_dict(tiny_sd)


@pytest.fixture(scope="module")
def decode_case(golden_dir):
    return load_file(str(golden_dir / "video_decode_case_0.safetensors"))


# ---- golden ------------------------------------------------------------------------------------------------


def test_golden_decode(tiny_vae, decode_case):
    assert torch.equal(decode_case["in.latent_mean"], torch.tensor(WAN22_LATENT_MEAN))
    frames = tiny_vae.decode(decode_case["in.video_latent"])
    assert frames.shape == (1, 3, 5, 32, 48) and frames.dtype == torch.float32
    assert (frames - decode_case["out.frames"]).abs().max() < TOL
    raw = tiny_vae.decode(decode_case["in.video_latent"], clamp=False)
    assert (raw - decode_case["out.frames_unclamped"]).abs().max() < TOL
    assert raw.abs().max() > 1.5  # the clamp really matters in this case


def test_golden_encode(tiny_vae, golden_dir):
    case = load_file(str(golden_dir / "video_encode_case_0.safetensors"))
    for name, shape in (("image", (1, 48, 1, 2, 3)), ("clip", (1, 48, 2, 2, 3))):
        latent = tiny_vae.encode(case[f"in.{name}"])
        assert latent.shape == shape
        assert (latent - case[f"out.{name}_latent"]).abs().max() < TOL


# ---- behaviour on the demo model -----------------------------------------------------------------------------


def test_demo_vae_shapes_range_and_determinism():
    vae = build_demo_video_vae(seed=0)
    assert vae.cfg == WanVAEConfig.tiny()
    z = torch.randn(1, 48, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    frames = vae.decode(z)
    assert frames.shape == (1, 3, 9, 32, 48)
    assert frames.min() >= -1 and frames.max() <= 1 and frames.std() > 0.05
    assert torch.equal(build_demo_video_vae(seed=0).decode(z), frames)
    assert not torch.equal(build_demo_video_vae(seed=1).decode(z), frames)
    assert vae.encode(frames[:, :, :5]).shape == (1, 48, 2, 2, 3)


def test_progress_reports_and_can_interrupt():
    vae = build_demo_video_vae(seed=0)
    z = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    calls = []
    frames = vae.decode(z, output_device="cpu", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and frames.device.type == "cpu"

    def stop(done, total):
        if done == 2:
            raise OviInterrupted("cancelled")

    with pytest.raises(OviInterrupted):
        vae.decode(z, progress=stop)


def test_decoding_is_causal_per_latent_frame():
    """Frame-by-frame decoding: the first latent frame alone gives exactly the first output frame."""
    vae = build_demo_video_vae(seed=0)
    z = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    full = vae.decode(z, clamp=False)
    # (equal up to float rounding: the 1x1x1 input conv runs on a different number of frames)
    assert (vae.decode(z[:, :, :1], clamp=False) - full[:, :, :1]).abs().max() < 1e-5
    assert (vae.decode(z[:, :, :2], clamp=False) - full[:, :, :5]).abs().max() < 1e-5
    assert (vae.decode(z[:, :, :2], clamp=False) - vae.decode(z[:, :, :2] * 1.01, clamp=False)).abs().max() > 1e-3


def test_tiled_decode_matches_untiled(tiny_vae):
    z = torch.randn(1, 48, 2, 4, 24, generator=torch.Generator().manual_seed(3))
    assert _tile_starts(24, 20, 16) == [0, 4]  # two tiles across the width, sharing 16 latent pixels
    full = tiny_vae.decode(z, clamp=False)
    tiled = tiny_vae.decode(z, tile=(4, 20), tile_overlap=16, clamp=False)
    err = (tiled - full).abs().max().item()
    assert 0 < err < 1e-3  # measured 5.4e-4; a plain cross-fade over the whole overlap gives ~0.2
    small_overlap = tiny_vae.decode(z, tile=(4, 16), tile_overlap=4, clamp=False)
    assert (small_overlap - full).abs().max() > 1e-2  # the overlap really is what keeps seams invisible


def test_tile_blend_weights_cover_every_pixel():
    h, w, tile, overlap = 40, 56, 24, 16
    total = torch.zeros(16 * h, 16 * w)
    starts_y, starts_x = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    assert starts_y == [0, 8, 16] and starts_x == [0, 8, 16, 24, 32]
    for y0 in starts_y:
        for x0 in starts_x:
            total[16 * y0 : 16 * (y0 + tile), 16 * x0 : 16 * (x0 + tile)] += _blend_mask(
                y0, tile, h, x0, tile, w, overlap, "cpu"
            )
    assert total.min() > 0.05  # every output pixel gets a weight; the decode divides by this sum
    assert torch.equal(_blend_mask(0, tile, tile, 0, tile, tile, overlap, "cpu"), torch.ones(16 * tile, 16 * tile))


def test_tile_validation(tiny_vae):
    z = torch.zeros(1, 48, 1, 4, 4)
    with pytest.raises(OviInputError, match="tile_overlap"):
        tiny_vae.decode(z, tile=(2, 2), tile_overlap=2)
    # a tile as large as the latent is plain decoding
    assert torch.equal(tiny_vae.decode(z, tile=(8, 8)), tiny_vae.decode(z))


# ---- file layouts ------------------------------------------------------------------------------------------------


def test_loads_original_pth_and_comfy_safetensors(tiny_sd, decode_case, tmp_path):
    latent = decode_case["in.video_latent"]
    pth = tmp_path / "Wan2.2_VAE.pth"
    torch.save(tiny_sd, pth)  # the original file is a pickled plain state dict
    comfy = tmp_path / "wan2.2_vae.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in tiny_sd.items()}, str(comfy))  # ComfyUI's file: same keys, bf16
    vae = load_video_vae(pth)
    assert (vae.decode(latent) - decode_case["out.frames"]).abs().max() < TOL
    vae16 = load_video_vae(comfy, dtype=torch.float32)
    assert vae16.encoder is not None
    assert (vae16.decode(latent) - decode_case["out.frames"]).abs().max() < 0.1  # bf16-rounded weights
    bf = load_video_vae(comfy, dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and bf.decode(latent[:, :, :1]).dtype == torch.float32


def test_loads_prefixed_checkpoint(tiny_sd, decode_case, tmp_path):
    path = tmp_path / "with_prefix.safetensors"
    save_file({"first_stage_model." + k: v for k, v in tiny_sd.items()}, str(path))
    out = load_video_vae(path).decode(decode_case["in.video_latent"])
    assert (out - decode_case["out.frames"]).abs().max() < TOL


def test_decoder_only_file_cannot_encode(golden_dir):
    vae = load_video_vae(golden_dir / "tiny_wan22_vae_decoder.safetensors")
    with pytest.raises(WrongFileError, match="encoder"):
        vae.encode(torch.zeros(1, 3, 1, 32, 32))


# ---- errors ---------------------------------------------------------------------------------------------------


def test_wan21_latent_is_rejected(tiny_vae):
    with pytest.raises(OviInputError, match=r"16 channels.*Wan2\.1"):
        tiny_vae.decode(torch.zeros(1, 16, 2, 4, 4))
    with pytest.raises(OviInputError, match="5-D"):
        tiny_vae.decode(torch.zeros(48, 2, 4, 4))


def test_nan_latent_is_rejected(tiny_vae):
    z = torch.zeros(1, 48, 2, 2, 2)
    z[0, 3, 1, 0, 0] = float("nan")
    with pytest.raises(OviInputError, match="NaN"):
        tiny_vae.decode(z)


def test_bad_frames_to_encode(tiny_vae):
    with pytest.raises(OviInputError, match="1\\+4k"):
        tiny_vae.encode(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(OviInputError, match="multiples of 16"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 30, 32))


@pytest.mark.parametrize(
    "keys, expect",
    [
        ({"video_model.patch_embedding.weight": (8, 48, 1, 2, 2), "audio_model.head.head.weight": (20, 8)}, "fusion"),
        ({"token_embedding.weight": (16, 8), "blocks.0.attn.q.weight": (8, 8)}, "text-encoder"),
        ({"conv_pre.weight_g": (8, 1, 1), "conv_pre.weight_v": (8, 80, 7)}, "vocoder"),
    ],
)
def test_wrong_kind_of_file(tmp_path, keys, expect):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(WrongFileError, match=expect):
        load_video_vae(path)


def test_wan21_vae_file_is_rejected(tiny_sd, tmp_path):
    sd = dict(tiny_sd)
    sd["decoder.conv1.weight"] = torch.zeros(32, 16, 3, 3, 3)  # a 16-channel (Wan2.1) latent space
    sd["conv2.weight"] = torch.zeros(16, 16, 1, 1, 1)
    path = tmp_path / "wan_2.1_vae.pth"
    torch.save(sd, path)
    with pytest.raises(WrongFileError, match=r"Wan2\.1"):
        load_video_vae(path)


def test_truncated_and_missing_files(tiny_sd, tmp_path):
    st = tmp_path / "cut.safetensors"
    save_file(tiny_sd, str(st))
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    pth = tmp_path / "cut.pth"
    torch.save(tiny_sd, pth)
    pth.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    for path in (st, pth):
        with pytest.raises(WrongFileError, match="truncated"):
            load_video_vae(path)
    with pytest.raises(WrongFileError, match="not found"):
        load_video_vae(tmp_path / "nope.pth")


class _NotATensor:
    pass


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"decoder.conv1.weight": torch.zeros(1), "payload": _NotATensor()}, path)
    with pytest.raises(WrongFileError, match="Python objects other than tensors"):
        load_video_vae(path)
