"""Audio encoder (mel front end + MMAudio VAE encoder) and audio preparation: golden case, rules, errors."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conformance.cases import audio_encode as audio_encode_case
from conformance.runner import CASE_KINDS, find_cases
from ovi_core.audio_input import encode_audio, encode_audio_batch, prepare_audio
from ovi_core.audio_resample import resample_audio
from ovi_core.bigvgan import fold_weight_norm
from ovi_core.errors import OviInputError, WrongFileError
from ovi_core.mmaudio_encoder import audio_encoder_from_state_dict, load_audio_encoder, slaney_mel_filterbank
from ovi_core.mmaudio_vae import audio_decoder_from_state_dicts, mel_vae_from_state_dict, normalize_mp_weight

TOL = 1e-4
N_5S = 157 * 512  # the 5 s variants' window: 80,384 samples


@pytest.fixture(scope="module")
def vae_sd(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "tiny_mmaudio_vae.safetensors"))  # raw weights, encoder.* + decoder.*


@pytest.fixture(scope="module")
def case(golden_dir) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "audio_encode_case_0.safetensors"))


@pytest.fixture(scope="module")
def encoder(vae_sd):
    return audio_encoder_from_state_dict(vae_sd)


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> torch.Tensor:
    return amp * torch.sin(2 * math.pi * freq * torch.arange(round(sr * seconds), dtype=torch.float64) / sr).float()


def _amplitude(x: torch.Tensor, freq: float, sr: int = 16000) -> float:
    """Amplitude of the sinusoid at freq (projection over the middle 4 s)."""
    t = torch.arange(x.shape[-1], dtype=torch.float64) / sr
    mid = slice(sr // 2, sr // 2 + 4 * sr)
    phasor = torch.exp(-2j * math.pi * freq * t[mid])
    return (2 * (x[mid].double() * phasor).mean()).abs().item()


def _peak_hz(x: torch.Tensor, sr: int = 16000) -> float:
    spectrum = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return spectrum.argmax().item() * sr / x.shape[-1]


# ---- golden ------------------------------------------------------------------------------------------------


def test_golden_case_runs_in_the_conformance_runner(golden_dir):
    assert CASE_KINDS["audio_encode_case"] == "conformance.cases.audio_encode:run"
    path = golden_dir / "audio_encode_case_0.safetensors"
    assert ("audio_encode_case", path) in find_cases(golden_dir)
    outcome = audio_encode_case.run(path)
    assert outcome.passed and outcome.tolerance == 1e-4
    assert outcome.max_abs_err < 1e-5  # measured 1.9e-6 (the reference's own fp32-vs-fp64 gap is 2.4e-6)


def test_mel_front_end_matches_the_golden(encoder, case):
    assert torch.equal(encoder.mel.mel_basis, case["in.mel_basis"])  # librosa 0.11's Slaney basis, bit for bit
    assert torch.equal(encoder.mel.window, case["in.hann_window"])
    wave = case["in.waveform"]  # [1, 17777]: 69 mel frames, 34 latents (the odd trailing frame is dropped)
    assert (encoder.mel.spectrogram(wave) - case["dbg.stft_magnitude"]).abs().max() < 1e-5
    mel = encoder.log_mel(wave)
    assert mel.shape == (1, 80, 69)
    assert (mel - case["out.mel"]).abs().max() < 1e-5
    assert (mel == math.log10(1e-5)).sum() == 240  # the golden's bins at the log floor (exact zeros in the input)


def test_latent_is_the_posterior_mean(encoder, case):
    mean, logvar = encoder.posterior(case["in.waveform"])
    assert mean.shape == logvar.shape == (1, 20, 34)
    assert (mean - case["out.mean"]).abs().max() < TOL
    assert (mean - case["out_fp64.mean"]).abs().max() < TOL
    assert (logvar - case["out.logvar"]).abs().max() < TOL
    assert torch.equal(encoder.encode(case["in.waveform"]), mean)


def test_decoding_the_golden_latent_gives_the_roundtrip_mel(vae_sd, case):
    decoder = mel_vae_from_state_dict(vae_sd)
    assert (decoder(case["out.mean"]) - case["dbg.roundtrip_mel"]).abs().max() < TOL


def test_filterbank_other_sizes_are_triangles_of_unit_area():
    fb = slaney_mel_filterbank(16000, 512, 40, 0.0, 8000.0)
    assert fb.shape == (40, 257) and fb.dtype == np.float32 and (fb >= 0).all()
    hz_step = 16000 / 512
    assert np.allclose(fb.sum(axis=1) * hz_step, 1.0, atol=0.08)  # slaney norm: area 1 in Hz (discretised)


# ---- file layouts ------------------------------------------------------------------------------------------------


def test_loaders(vae_sd, case, tmp_path, golden_dir):
    torch.save(vae_sd, tmp_path / "v1-16.pth")
    wave = case["in.waveform"]
    assert (load_audio_encoder(tmp_path / "v1-16.pth").encode(wave) - case["out.mean"]).abs().max() < TOL
    # ComfyUI's single file: vae.* with the MP weights already normalised, vocoder.*, mel_converter.*
    comfy = {
        "vae." + k: (normalize_mp_weight(v) if k.endswith(".weight") and v.dim() == 3 else v) for k, v in vae_sd.items()
    }
    vocoder = fold_weight_norm(load_file(str(golden_dir / "tiny_bigvgan.safetensors")))
    comfy.update({"vocoder." + k: v for k, v in vocoder.items()})
    comfy["mel_converter.mel_basis"] = case["in.mel_basis"]
    save_file(comfy, str(tmp_path / "mmaudio_vae_comfy.safetensors"))
    enc = load_audio_encoder(tmp_path / "mmaudio_vae_comfy.safetensors")
    assert (enc.encode(wave) - case["out.mean"]).abs().max() < TOL
    # bfloat16 weights: the mel and the statistics stay float32, the latent comes back float32
    enc16 = load_audio_encoder(tmp_path / "v1-16.pth", dtype=torch.bfloat16)
    assert enc16.dtype == torch.bfloat16 and enc16.mel.mel_basis.dtype == torch.float32
    z16 = enc16.encode(wave)
    assert z16.dtype == torch.float32 and (z16 - case["out.mean"]).abs().max() < 0.2


def test_wrong_files(vae_sd, golden_dir, tmp_path):
    decoder_only = {k: v for k, v in vae_sd.items() if not k.startswith("encoder.")}
    with pytest.raises(WrongFileError, match="only the decoder half.*v1-16.pth"):
        audio_encoder_from_state_dict(decoder_only, source="vae_decoder.safetensors")
    vocoder = load_file(str(golden_dir / "tiny_bigvgan.safetensors"))
    torch.save({"generator": vocoder}, tmp_path / "best_netG.pt")
    with pytest.raises(WrongFileError, match=r"not an MMAudio audio VAE: it looks like a BigVGAN vocoder — load it with "
                                             r"the Ovi audio VAE loader as its vocoder_name"):
        load_audio_encoder(tmp_path / "best_netG.pt")
    save_file({"token_embedding.weight": torch.zeros(16, 8)}, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(WrongFileError, match="not an MMAudio audio VAE"):
        load_audio_encoder(tmp_path / "umt5.safetensors")
    half = {k: v for k, v in vae_sd.items() if k != "encoder.mid.attn_1.qkv.weight"}
    with pytest.raises(WrongFileError, match="missing 1 VAE encoder tensors.*qkv"):
        audio_encoder_from_state_dict(half)


# ---- lengths and layout ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [512, 1023, 1024, 5000, 17777])
def test_n_samples_give_n_over_512_latents(encoder, n):
    wave = torch.randn(2, n, generator=torch.Generator().manual_seed(n)) * 0.3
    assert encoder.log_mel(wave).shape == (2, 80, n // 256)
    assert encoder.encode(wave).shape == (2, 20, n // 512)


def test_encode_audio_layout_and_decode_roundtrip_length(encoder, vae_sd, golden_dir):
    decoder = audio_decoder_from_state_dicts(vae_sd, load_file(str(golden_dir / "tiny_bigvgan.safetensors")))
    wave = _sine(440, 16000, 5.0)[None]
    z = encode_audio(encoder, wave, 16000, "720x720_5s")
    assert z.shape == (157, 20) and z.dtype == torch.float32  # the sampler's [L, 20]
    # it is the VAE's [1, 20, L] transposed
    assert torch.equal(z, encoder.encode(prepare_audio(wave, 16000, N_5S)[None])[0].T)
    assert decoder.decode(z.T[None]).shape == (1, 1, N_5S)
    z10 = encode_audio(encoder, wave, 16000, "960x960_10s")
    assert z10.shape == (314, 20)
    assert decoder.decode(z10.T[None]).shape == (1, 1, 314 * 512)


def test_batch_equals_clips_one_by_one(encoder):
    g = torch.Generator().manual_seed(3)
    batch = torch.randn(3, 2, 22050, generator=g) * 0.2  # ComfyUI AUDIO [B, C, N] at 22.05 kHz
    z = encode_audio_batch(encoder, batch, 22050, num_latents=20)
    assert z.shape == (3, 20, 20)
    for i in range(3):
        assert (z[i] - encode_audio(encoder, batch[i], 22050, num_latents=20)).abs().max() < 1e-5


# ---- preparation rules ---------------------------------------------------------------------------------------------


def test_stereo_44k1_is_averaged_then_resampled(caplog):
    left, right = _sine(440, 44100, 5.024), _sine(3000, 44100, 5.024, amp=0.25)
    with caplog.at_level(logging.INFO, logger="ovi_core.audio_input"):
        out = prepare_audio(torch.stack([left, right]), 44100, N_5S)
    assert out.shape == (N_5S,) and out.dtype == torch.float32
    want = resample_audio((left + right) / 2, 44100, 16000)
    assert (out - want).abs().max() < 1e-5
    assert _amplitude(out, 440) == pytest.approx(0.25, abs=0.005)  # (0.5 + 0) / 2
    assert _amplitude(out, 3000) == pytest.approx(0.125, abs=0.005)  # (0 + 0.25) / 2
    assert "2 channels at 44100 Hz" in caplog.text and "mixed to mono, resampled to 16 kHz" in caplog.text
    assert all(r.levelno == logging.INFO for r in caplog.records)  # 5.024 s fits exactly: nothing cut or padded


@pytest.mark.parametrize("sr", [48000, 8000, 16000])
def test_other_rates_keep_pitch_and_timing(sr):
    freq = 1000.0
    wave = _sine(freq, sr, 2.0)
    wave[: sr // 2] = 0  # the tone starts at 0.5 s; it must still start at 0.5 s
    out = prepare_audio(wave[None], sr, 64 * 512)  # 2.048 s window
    assert _peak_hz(out[8000:32000]) == pytest.approx(freq, abs=2)
    ideal = _sine(freq, 16000, 2.0)
    assert (out[9000:31000] - ideal[9000:31000]).abs().max() < 0.01
    assert out[:7900].abs().max() < 0.01 and out[32100:].abs().max() == 0  # padded end is exact silence


def test_too_long_is_trimmed_at_the_end(caplog):
    wave = torch.randn(1, 16000 * 12, generator=torch.Generator().manual_seed(0)) * 0.3
    with caplog.at_level(logging.INFO, logger="ovi_core.audio_input"):
        out = prepare_audio(wave, 16000, N_5S)
    assert torch.equal(out, wave[0, :N_5S])  # the start is kept as is
    assert "6.976 s cut from the end" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING


def test_long_input_is_cut_before_resampling_without_changing_the_result():
    wave = torch.randn(2, 44100 * 30, generator=torch.Generator().manual_seed(1)) * 0.3
    out = prepare_audio(wave, 44100, N_5S)
    full = resample_audio(wave.mean(0), 44100, 16000)[:N_5S]  # resample all 30 s, then trim
    assert (out - full).abs().max() < 1e-5


def test_too_short_is_padded_with_silence_at_the_end(caplog):
    wave = _sine(300, 16000, 1.5)
    with caplog.at_level(logging.INFO, logger="ovi_core.audio_input"):
        out = prepare_audio(wave, 16000, N_5S)
    assert torch.equal(out[:24000], wave) and torch.equal(out[24000:], torch.zeros(N_5S - 24000))
    assert "3.524 s of silence added at the end" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING


def test_a_few_ms_off_is_only_info(caplog):
    with caplog.at_level(logging.INFO, logger="ovi_core.audio_input"):
        prepare_audio(_sine(300, 16000, 5.0), 16000, N_5S)  # 5.000 s into 5.024 s: 24 ms of padding
    assert "0.024 s of silence added" in caplog.text
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_silent_audio_is_encoded_with_a_warning(encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="ovi_core.audio_input"):
        z = encode_audio(encoder, torch.zeros(2, 48000), 48000, "720x720_5s")
    assert "silent" in caplog.text
    assert z.shape == (157, 20) and torch.isfinite(z).all()
    inner = z[20:-20]  # constant input -> constant latent away from the convolutions' zero padding at the ends
    assert (inner - inner.mean(0)).abs().max() < 1e-4


def test_clipped_audio_is_kept_and_clipped_by_the_mel_front_end(encoder, caplog):
    wave = _sine(200, 16000, 5.024, amp=1.5)[None]
    with caplog.at_level(logging.WARNING, logger="ovi_core.audio_input"):
        prepared = prepare_audio(wave, 16000, N_5S)
    assert prepared.abs().max() == pytest.approx(1.5, abs=1e-3)  # kept as is
    assert "peaks at 1.500" in caplog.text and "clips them to [-1, 1]" in caplog.text
    # what the VAE sees is MMAudio's clamp to [-1, 1]
    clipped = encode_audio(encoder, wave, 16000, "720x720_5s")
    assert torch.equal(clipped, encode_audio(encoder, wave.clamp(-1, 1), 16000, "720x720_5s"))


def test_numpy_and_float64_inputs():
    wave = np.random.default_rng(0).standard_normal((2, 1000)) * 0.1  # float64
    out = prepare_audio(wave, 16000, 1024)
    assert out.dtype == torch.float32 and torch.allclose(out[:1000], torch.from_numpy(wave.mean(0)).float())


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wave, sr, match",
    [
        (torch.zeros(2, 0), 16000, "empty"),
        (torch.zeros(0, 100), 16000, "empty"),
        (torch.full((1, 100), float("nan")), 16000, "100 NaN/inf samples"),
        (torch.tensor([[0.0, float("inf"), 0.1]]), 16000, "1 NaN/inf"),
        (torch.zeros(1, 100), 0, "sample rate.*got 0"),
        (torch.zeros(1, 100), -44100, "sample rate"),
        (torch.zeros(1, 100), 44100.5, "whole number"),
        (torch.zeros(1, 100), float("nan"), "sample rate"),
        (torch.zeros(1, 100), True, "sample rate"),
        (torch.zeros(1, 100), "44100", "sample rate"),
        (torch.zeros(1, 100), 10_000_000, "768,000"),
        (torch.zeros(9, 100), 16000, "9 channels; at most 8"),
        (torch.zeros(48000, 2), 48000, "transpose"),
        (torch.zeros(1, 100, dtype=torch.int16), 16000, "divide by 32768"),
        (torch.zeros(1, 2, 100), 16000, "encode_audio_batch"),
        ([0.0, 0.1], 16000, "tensor"),
    ],
)
def test_bad_audio_raises(wave, sr, match):
    with pytest.raises(OviInputError, match=match):
        prepare_audio(wave, sr, N_5S)


def test_bad_arguments_of_the_encode_functions(encoder):
    wave = torch.zeros(1, 1000)
    with pytest.raises(OviInputError, match="unknown Ovi variant"):
        encode_audio(encoder, wave, 16000, "1080p_60s")
    with pytest.raises(OviInputError, match="variant"):
        encode_audio(encoder, wave, 16000)
    with pytest.raises(OviInputError, match="num_latents"):
        encode_audio(encoder, wave, 16000, num_latents=0)
    with pytest.raises(OviInputError, match=r"\[batch, channels, samples\]"):
        encode_audio_batch(encoder, wave[None, None], 16000, "720x720_5s")
    # [C, N] is one clip (ovi_core.media.audio_layout): the same latent as [1, C, N]
    assert torch.equal(encode_audio_batch(encoder, wave, 16000, "720x720_5s"),
                       encode_audio_batch(encoder, wave[None], 16000, "720x720_5s"))
    with pytest.raises(OviInputError, match="9 channels"):
        encode_audio_batch(encoder, torch.zeros(1, 9, 100), 16000, "720x720_5s")
    with pytest.raises(OviInputError, match="too short"):
        encoder.encode(torch.zeros(1, 300))
    with pytest.raises(OviInputError, match=r"mono 16 kHz waveform \[batch, samples\]"):
        encoder.encode(torch.zeros(1, 2, 1000))


def test_demo_encoder_shapes_and_determinism():
    from ovi_core.mmaudio_encoder import build_demo_audio_encoder

    wave = torch.randn(1, 3, 30000, generator=torch.Generator().manual_seed(5)) * 0.3
    z = encode_audio_batch(build_demo_audio_encoder(seed=0), wave, 24000, "720x720_5s")
    assert z.shape == (1, 157, 20) and torch.isfinite(z).all() and z.std() > 1e-3
    assert torch.equal(encode_audio_batch(build_demo_audio_encoder(seed=0), wave, 24000, "720x720_5s"), z)
    assert not torch.equal(encode_audio_batch(build_demo_audio_encoder(seed=1), wave, 24000, "720x720_5s"), z)
