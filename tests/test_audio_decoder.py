"""Audio decoder (MMAudio VAE + BigVGAN) and resampling: golden case, file layouts, errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.audio_resample import resample_audio
from ovi_core.bigvgan import fold_weight_norm, kaiser_sinc_filter
from ovi_core.errors import OviInputError, WrongFileError
from ovi_core.mmaudio_vae import (
    audio_decoder_from_state_dicts,
    build_demo_audio_decoder,
    load_audio_decoder,
    normalize_mp_weight,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def vae_sd(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "tiny_mmaudio_vae.safetensors"))  # raw weights, like v1-16.pth


@pytest.fixture(scope="module")
def vocoder_sd(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "tiny_bigvgan.safetensors"))  # weight_g / weight_v, like best_netG.pt


@pytest.fixture(scope="module")
def case(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "audio_decode_case_0.safetensors"))


def _check_golden(decoder, case, tol=TOL):
    wav = decoder.decode(case["in.audio_latent_BCL"])
    assert wav.shape == (1, 1, 4096) and wav.dtype == torch.float32
    assert (wav - case["out.waveform"]).abs().max() < tol


# ---- golden ------------------------------------------------------------------------------------------------


def test_golden_mel_and_waveform(vae_sd, vocoder_sd, case):
    decoder = audio_decoder_from_state_dicts(vae_sd, vocoder_sd)
    assert decoder.sample_rate == 16000
    mel = decoder.decode_mel(case["in.audio_latent_BCL"])
    assert mel.shape == (1, 80, 16)
    assert (mel - case["out.mel"]).abs().max() < TOL
    _check_golden(decoder, case)


def test_antialias_filters_match_the_released_constants(vocoder_sd):
    ours = kaiser_sinc_filter(0.25, 0.3, 12)
    assert torch.equal(vocoder_sd["activation_post.upsample.filter"], ours)
    assert torch.equal(vocoder_sd["resblocks.5.activations.3.downsample.lowpass.filter"], ours)


# ---- file layouts ------------------------------------------------------------------------------------------------


def test_loads_mmaudio_pth_files(vae_sd, vocoder_sd, case, tmp_path):
    """v1-16.pth is a plain state dict; best_netG.pt keeps the generator under 'generator' next to other entries."""
    torch.save(vae_sd, tmp_path / "v1-16.pth")
    torch.save({"generator": vocoder_sd, "steps": 1_000_000, "epoch": 3}, tmp_path / "best_netG.pt")
    _check_golden(load_audio_decoder(tmp_path / "v1-16.pth", tmp_path / "best_netG.pt"), case)


def test_vocoder_key_styles(vae_sd, vocoder_sd, case, tmp_path):
    parametrized = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        ): v
        for k, v in vocoder_sd.items()
    }
    assert not any(k.endswith(("weight_g", "weight_v")) for k in parametrized)
    _check_golden(audio_decoder_from_state_dicts(vae_sd, parametrized), case)
    folded = fold_weight_norm(vocoder_sd)  # plain `.weight` keys (weight norm already removed)
    save_file({"vocoder." + k: v for k, v in folded.items()}, str(tmp_path / "vocoder.safetensors"))
    torch.save(vae_sd, tmp_path / "vae.pth")
    _check_golden(load_audio_decoder(tmp_path / "vae.pth", tmp_path / "vocoder.safetensors"), case)


def test_loads_comfyui_single_file_layout(vae_sd, vocoder_sd, case, tmp_path):
    """ComfyUI's MMAudio VAE file: vae.* (MP weights already normalised), vocoder.* (plain weights), mel_converter.*."""
    sd = {}
    for k, v in vae_sd.items():
        normalise = k.endswith(".weight") and v.dim() == 3
        sd["vae." + k] = normalize_mp_weight(v) if normalise else v
    sd.update({"vocoder." + k: v for k, v in fold_weight_norm(vocoder_sd).items()})
    sd["mel_converter.mel_basis"] = torch.zeros(80, 513)
    sd["mel_converter.hann_window"] = torch.hann_window(1024)
    path = tmp_path / "mmaudio_vae_comfy.safetensors"
    save_file(sd, str(path))
    _check_golden(load_audio_decoder(path), case)


def test_demo_decoder_shapes_and_determinism():
    dec = build_demo_audio_decoder(seed=0)
    z = torch.randn(2, 20, 7, generator=torch.Generator().manual_seed(4))
    wav = dec.decode(z)
    assert wav.shape == (2, 1, 512 * 7)
    assert wav.abs().max() <= 1 and wav.std() > 1e-3
    assert torch.equal(build_demo_audio_decoder(seed=0).decode(z), wav)
    assert not torch.equal(build_demo_audio_decoder(seed=1).decode(z), wav)


# ---- errors ---------------------------------------------------------------------------------------------------


def test_bad_latents():
    dec = build_demo_audio_decoder(seed=0)
    with pytest.raises(OviInputError, match="40 channels"):
        dec.decode(torch.zeros(1, 40, 8))
    with pytest.raises(OviInputError, match="transpose"):
        dec.decode(torch.zeros(1, 8, 20))  # the sampler's channel-last [L, 20] layout
    z = torch.zeros(1, 20, 8)
    z[0, 0, 3] = float("inf")
    with pytest.raises(OviInputError, match="NaN/inf"):
        dec.decode(z)


def test_wrong_files(vae_sd, vocoder_sd, tmp_path):
    torch.save(vae_sd, tmp_path / "v1-16.pth")
    torch.save({"generator": vocoder_sd}, tmp_path / "best_netG.pt")
    with pytest.raises(WrongFileError, match=r"not an MMAudio audio VAE: it looks like a BigVGAN vocoder — load it with "
                                             r"the Ovi audio VAE loader as its vocoder_name \(CLI: --vocoder\)"):
        load_audio_decoder(tmp_path / "best_netG.pt", tmp_path / "v1-16.pth")
    with pytest.raises(WrongFileError, match=r"not a BigVGAN vocoder.*MMAudio audio VAE — load it with the Ovi audio VAE "
                                             r"loader as its vae_name \(CLI: --audio-vae\)"):
        load_audio_decoder(tmp_path / "v1-16.pth", tmp_path / "v1-16.pth")
    with pytest.raises(OviInputError, match="best_netG.pt"):
        load_audio_decoder(tmp_path / "v1-16.pth")
    save_file({"token_embedding.weight": torch.zeros(16, 8)}, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(WrongFileError, match="text-encoder"):
        load_audio_decoder(tmp_path / "umt5.safetensors", tmp_path / "best_netG.pt")
    save_file({"video_model.head.head.weight": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(WrongFileError, match="fusion"):
        load_audio_decoder(tmp_path / "model.safetensors", tmp_path / "best_netG.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "best_netG.pt").read_bytes()[:1000])
    with pytest.raises(WrongFileError, match="truncated"):
        load_audio_decoder(tmp_path / "v1-16.pth", cut)
    half_pair = {k: v for k, v in vocoder_sd.items() if k != "conv_post.weight_v"}
    with pytest.raises(WrongFileError, match="conv_post"):
        audio_decoder_from_state_dicts(vae_sd, half_pair)


# ---- resampling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to_sr", [44100, 48000])
def test_resample_length_and_sine(to_sr):
    n = 512 * 20  # 20 audio latents
    t = torch.arange(n) / 16000
    wave = torch.stack([torch.sin(2 * math.pi * 1000 * t), torch.sin(2 * math.pi * 3000 * t)]).view(2, 1, n)
    out = resample_audio(wave, 16000, to_sr)
    assert out.shape == (2, 1, round(n * to_sr / 16000))
    for row, freq in ((0, 1000), (1, 3000)):
        spectrum = torch.fft.rfft(out[row, 0] * torch.hann_window(out.shape[-1])).abs()
        assert abs(spectrum.argmax().item() * to_sr / out.shape[-1] - freq) < 5  # bin width ~1.6 Hz
        # time-aligned: the middle matches the ideal sine sampled at the new rate
        ideal = torch.sin(2 * math.pi * freq * torch.arange(out.shape[-1]) / to_sr)
        assert (out[row, 0, 500:-500] - ideal[500:-500]).abs().max() < 0.01


def test_resample_same_rate_and_errors():
    wave = torch.randn(1, 1, 100)
    assert torch.equal(resample_audio(wave, 16000, 16000), wave)
    with pytest.raises(OviInputError):
        resample_audio(wave, 16000, 0)
