"""Ovi as a native ComfyUI model (nodes/native_model.py), on the demo model, inside a real ComfyUI.

Runs only where ComfyUI's ``comfy`` package imports (the ComfyUI venv with a ComfyUI tree on PYTHONPATH); the
normal test run skips it:
    PYTHONPATH=/path/to/ComfyUI:. /path/to/comfy_venv/bin/python -m pytest -q tests/test_native_model.py
Proves: core's samplers (KSampler path, SamplerCustom path) with 'euler' and Ovi's euler σ list give the final
latents of ovi_core.sampler.sample_joint from the same noise, with and without CFG + skip-layer guidance; a zero
noise mask keeps a modality bit for bit; a mask keeping video frame 0 is Ovi's image-to-video.
"""

from __future__ import annotations

import types

import pytest
import torch

from tests import comfy_inproc  # first: skips this module where ComfyUI is not importable, else sets up ComfyUI

native = comfy_inproc.load_nodes_module("native_model")

import comfy.latent_formats  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.nested_tensor  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402

from ovi_core.sampler import make_noise, sample_joint  # noqa: E402
from tests.comfy_inproc import COMFY_DIR, load_core, load_file, nodes_module_as  # noqa: E402

F, H, W, L = 3, 4, 4, 13  # latent sizes: 3 frames of 4x4 (64x64 pixels), 13 audio steps
STEPS, SEED, TOL = 4, 7, 1e-5


def _conds(texts):
    positive = [[texts.positive[None], {}]]
    negative = [[texts.video_negative[None], {native.AUDIO_CONTEXT_KEY: texts.audio_negative[None]}]]
    return positive, negative


def _noise():
    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    return v, a, comfy.nested_tensor.NestedTensor((v[None], a.T[None].contiguous()))


def _to_model_space(video_raw):
    return comfy.latent_formats.Wan22().process_in(video_raw)


def _reference(fusion, texts, v_noise, a_noise, guidance, slg_layer, first=None):
    return sample_joint(fusion, texts, video_noise=v_noise, audio_noise=a_noise, solver="euler", steps=STEPS,
                        shift=5.0, video_guidance=guidance, audio_guidance=guidance, slg_layer=slg_layer,
                        first_frame_latent=first)


@pytest.mark.parametrize("cfg, slg_layer", [(1.0, 0), (4.0, 1)])
def test_ksampler_euler_equals_ovi_euler(fusion, texts, cfg, slg_layer):
    """Core KSampler('euler') with Ovi's euler σ list == sample_joint(solver='euler'); CFG maps to equal video and
    audio guidance, Ovi's audio negative rides in the negative CONDITIONING, SLG hits core's uncond rows."""
    v_noise, a_noise, noise = _noise()
    ref_v, ref_a = _reference(fusion, texts, v_noise, a_noise, cfg, slg_layer)

    model = native.build_model_patcher(fusion, slg_layer=slg_layer)
    positive, negative = _conds(texts)
    latent = native.empty_av_latent(F, H, W, L)["samples"]
    sampler = comfy.samplers.KSampler(model, steps=STEPS, device=model.load_device, sampler="euler",
                                      scheduler="simple", model_options=model.model_options)
    out = sampler.sample(noise, positive, negative, cfg=cfg, latent_image=latent,
                         sigmas=native.ovi_sigmas("euler", STEPS), seed=SEED, disable_pbar=True)
    video_raw, audio = out.unbind()

    err_v = (_to_model_space(video_raw) - ref_v).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"cfg {cfg} slg {slg_layer}: max |comfy - ovi| video {err_v:.3g}, audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL
    assert ref_v.abs().max() > 0.1  # a real generation, not a trivially small one
    if slg_layer:  # the skip layer really acts (on the negative rows only): without it the result is another one
        plain_v, _ = _reference(fusion, texts, v_noise, a_noise, cfg, 0)
        assert (plain_v - ref_v).abs().max() > 1e-3


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_ovi_sampler_equals_ovi_solver(fusion, texts, solver):
    """The SAMPLER running Ovi's own solver under core's CFG (sample_custom) == sample_joint(solver): exact UniPC /
    DPM++ in the native path (core's uni_pc / dpmpp_2m are other solvers; see docs/native_model_design.md)."""
    v_noise, a_noise, noise = _noise()
    ref_v, ref_a = sample_joint(fusion, texts, video_noise=v_noise, audio_noise=a_noise, solver=solver, steps=STEPS,
                                shift=5.0, video_guidance=4.0, audio_guidance=4.0, slg_layer=1)
    model = native.build_model_patcher(fusion, slg_layer=1)
    positive, negative = _conds(texts)
    out = comfy.sample.sample_custom(model, noise, 4.0, native.ovi_sampler(solver), native.ovi_sigmas(solver, STEPS),
                                     positive, negative, native.empty_av_latent(F, H, W, L)["samples"],
                                     disable_pbar=True, seed=SEED)
    video_raw, audio = out.unbind()
    err_v = (_to_model_space(video_raw) - ref_v).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"ovi_sampler({solver}): max |comfy - ovi| video {err_v:.3g}, audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL


@pytest.mark.parametrize("solver, sampler_name", [("unipc", None), ("euler", "euler")])
def test_ovi_guider_equals_pack_sampler_defaults(fusion, texts, solver, sampler_name):
    """SamplerCustomAdvanced's call (guider.sample) with Ovi Guider (video cfg 4, audio cfg 3, SLG), Ovi's noise
    for the seed, Ovi's σ list and Ovi's solver (or core euler) == sample_joint with Ovi's default settings."""
    ref_v, ref_a = sample_joint(fusion, texts, video_shape=(48, F, H, W), audio_shape=(L, 20), seed=SEED,
                                solver=solver, steps=STEPS, shift=5.0, video_guidance=4.0, audio_guidance=3.0,
                                slg_layer=1)
    model = native.build_model_patcher(fusion, slg_layer=1)
    guider = native.OviGuider(model, video_cfg=4.0, audio_cfg=3.0)
    guider.set_conds([[texts.positive[None], {}]], [[texts.video_negative[None], {}]],
                     [[texts.audio_negative[None], {}]])
    latent = native.empty_av_latent(F, H, W, L)
    sampler = native.ovi_sampler(solver) if sampler_name is None else comfy.samplers.sampler_object(sampler_name)
    out = guider.sample(native.OviNoise(SEED).generate_noise(latent), latent["samples"], sampler,
                        native.ovi_sigmas(solver, STEPS), disable_pbar=True, seed=SEED)
    video_raw, audio = out.unbind()
    err_v = (_to_model_space(video_raw) - ref_v).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"Ovi Guider 4/3 + {sampler_name or 'ovi_sampler'}({solver}): max |comfy - ovi| video {err_v:.3g}, "
          f"audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL


@pytest.fixture(scope="module")
def core_nodes():
    """ComfyUI's nodes.py (KSampler, KSamplerAdvanced) and the V3 node files SamplerCustomAdvanced and the A/V latent
    nodes live in; ComfyUI's ``nodes`` module is installed under its name only while they import."""
    comfy_nodes, custom, lt = load_core("comfy_extras/nodes_custom_sampler.py", "comfy_extras/nodes_lt.py")
    return types.SimpleNamespace(nodes=comfy_nodes, custom=custom, lt=lt)


def test_core_nodes_run_the_ovi_model(fusion, texts, core_nodes):
    """Core KSampler / KSamplerAdvanced nodes (euler, 'normal' scheduler, cfg 4) on the MODEL and the joint LATENT;
    SamplerCustomAdvanced + Ovi Guider + Ovi unipc == the pack's defaults; LTXVSeparateAVLatent splits the result.
    Core 'normal' at shift 5 is Ovi's euler σ list to 1 float32 ulp, so KSampler(euler, normal) is Ovi's euler to
    a few 1e-5 on the random demo model (measured 5.7e-5 at 4 steps, 2.0e-5 at 8; Ovi's exact σ list gives < 5e-6,
    test_ksampler_euler_equals_ovi_euler)."""
    model = native.build_model_patcher(fusion, slg_layer=1)
    positive, negative = _conds(texts)
    latent = native.empty_av_latent(F, H, W, L)

    (out,) = core_nodes.nodes.KSampler().sample(model, SEED, STEPS, 4.0, "euler", "normal", positive, negative, latent)
    video_raw, audio = out["samples"].unbind()
    noise = comfy.sample.prepare_noise(latent["samples"], SEED).unbind()  # what the node drew
    ref_v, ref_a = sample_joint(fusion, texts, video_noise=noise[0][0], audio_noise=noise[1][0].T, solver="euler",
                                steps=STEPS, shift=5.0, video_guidance=4.0, audio_guidance=4.0, slg_layer=1)
    err_v = (_to_model_space(video_raw) - ref_v).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"KSampler node (euler, normal, cfg 4): max |comfy - ovi| video {err_v:.3g}, audio {err_a:.3g}")
    assert err_v < 1e-4 and err_a < 1e-4
    (adv,) = core_nodes.nodes.KSamplerAdvanced().sample(model, "enable", SEED, STEPS, 4.0, "euler", "normal", positive,
                                                        negative, latent, 0, 10000, "disable")
    assert all(torch.equal(x, y) for x, y in zip(adv["samples"].unbind(), out["samples"].unbind()))

    guider = native.OviGuider(model, 4.0, 3.0)
    guider.set_conds(positive, [[texts.video_negative[None], {}]], [[texts.audio_negative[None], {}]])
    result = comfy_inproc.out(core_nodes.custom.SamplerCustomAdvanced.execute(
        native.OviNoise(SEED), guider, native.ovi_sampler("unipc"), native.ovi_sigmas("unipc", STEPS), latent))
    ref_v, ref_a = sample_joint(fusion, texts, video_shape=(48, F, H, W), audio_shape=(L, 20), seed=SEED,
                                solver="unipc", steps=STEPS, shift=5.0, video_guidance=4.0, audio_guidance=3.0,
                                slg_layer=1)
    video_raw, audio = result[0]["samples"].unbind()
    assert (_to_model_space(video_raw) - ref_v).abs().max() < TOL
    assert (audio.transpose(1, 2) - ref_a).abs().max() < TOL
    assert result[1]["samples"].is_nested  # the denoised output too

    video_latent, audio_latent = comfy_inproc.out(core_nodes.lt.LTXVSeparateAVLatent.execute(result[0]))
    assert torch.equal(video_latent["samples"], video_raw) and torch.equal(audio_latent["samples"], audio)


def test_ovi_noise_is_make_noise():
    latent = native.empty_av_latent(F, H, W, L)
    noise = native.OviNoise(SEED).generate_noise(latent)
    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    assert torch.equal(noise.unbind()[0][0], v) and torch.equal(noise.unbind()[1][0], a.T)


def test_zero_audio_mask_keeps_audio_bit_for_bit(fusion, texts):
    """SamplerCustom path (comfy.sample.sample_custom): audio mask 0 -> the audio latent comes back unchanged, and
    the video is generated with that audio in view (clean, t = 0), so it differs from a joint generation."""
    _, _, noise = _noise()
    model = native.build_model_patcher(fusion, slg_layer=1)
    positive, negative = _conds(texts)
    audio_in = torch.randn(1, 20, L, generator=torch.Generator().manual_seed(3)) * 0.7
    latent = comfy.nested_tensor.NestedTensor((torch.zeros(1, 48, F, H, W), audio_in.clone()))
    mask = comfy.nested_tensor.NestedTensor((torch.ones(1, 1, F, H, W), torch.zeros(1, 1, L)))
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = native.ovi_sigmas("euler", STEPS)

    out = comfy.sample.sample_custom(model, noise, 4.0, sampler, sigmas, positive, negative, latent,
                                     noise_mask=mask, disable_pbar=True, seed=SEED)
    video, audio = out.unbind()
    assert torch.equal(audio, audio_in)

    joint = comfy.sample.sample_custom(model, noise, 4.0, sampler, sigmas, positive, negative,
                                       native.empty_av_latent(F, H, W, L)["samples"], disable_pbar=True, seed=SEED)
    assert torch.isfinite(video).all()
    assert (video - joint.unbind()[0]).abs().max() > 1e-3  # the kept audio steered the video


def test_zero_video_mask_keeps_video_bit_for_bit(fusion, texts):
    _, _, noise = _noise()
    model = native.build_model_patcher(fusion, slg_layer=1)
    positive, negative = _conds(texts)
    video_in = torch.randn(1, 48, F, H, W, generator=torch.Generator().manual_seed(4))
    latent = comfy.nested_tensor.NestedTensor((video_in.clone(), torch.zeros(1, 20, L)))
    mask = comfy.nested_tensor.NestedTensor((torch.zeros(1, 1, F, H, W), torch.ones(1, 1, L)))
    out = comfy.sample.sample_custom(model, noise, 4.0, comfy.samplers.sampler_object("euler"),
                                     native.ovi_sigmas("euler", STEPS), positive, negative, latent, noise_mask=mask,
                                     disable_pbar=True, seed=SEED)
    assert torch.equal(out.unbind()[0], video_in)
    assert torch.isfinite(out.unbind()[1]).all()


def test_first_frame_mask_is_ovi_image_to_video(fusion, texts):
    """A video mask keeping latent frame 0 == sample_joint(first_frame_latent=...); frame 0 comes back bit for bit."""
    v_noise, a_noise, noise = _noise()
    first_raw = torch.randn(1, 48, 1, H, W, generator=torch.Generator().manual_seed(5)) * 0.5
    ref_v, ref_a = _reference(fusion, texts, v_noise, a_noise, 4.0, 1, first=_to_model_space(first_raw))

    model = native.build_model_patcher(fusion, slg_layer=1)
    positive, negative = _conds(texts)
    video_in = torch.cat([first_raw, torch.zeros(1, 48, F - 1, H, W)], dim=2)
    latent = comfy.nested_tensor.NestedTensor((video_in, torch.zeros(1, 20, L)))
    video_mask = torch.ones(1, 1, F, H, W)
    video_mask[:, :, 0] = 0
    mask = comfy.nested_tensor.NestedTensor((video_mask, torch.ones(1, 1, L)))
    out = comfy.sample.sample_custom(model, noise, 4.0, comfy.samplers.sampler_object("euler"),
                                     native.ovi_sigmas("euler", STEPS), positive, negative, latent, noise_mask=mask,
                                     disable_pbar=True, seed=SEED)
    video_raw, audio = out.unbind()
    assert torch.equal(video_raw[:, :, :1], first_raw)
    err_v = (_to_model_space(video_raw)[:, :, 1:] - ref_v[:, :, 1:]).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"image-to-video by mask: max |comfy - ovi| video {err_v:.3g}, audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL


def test_model_sampling_sd3_sets_the_shift(fusion):
    """Default shift 5.0 (Ovi); core ModelSamplingSD3 replaces it; timestep = 1000·σ."""
    model = native.build_model_patcher(fusion)
    ms = model.get_model_object("model_sampling")
    assert ms.shift == 5.0 and ms.timestep(torch.tensor([0.5])).item() == 500.0
    with nodes_module_as(types.ModuleType("nodes")):  # the node file imports ComfyUI's nodes.py only for a constant
        advanced = load_file("comfy_nodes_model_advanced", COMFY_DIR / "comfy_extras" / "nodes_model_advanced.py")
    (patched,) = advanced.ModelSamplingSD3().patch(model, shift=3.0)
    assert patched.get_model_object("model_sampling").shift == 3.0
    assert model.get_model_object("model_sampling").shift == 5.0


def test_state_dict_keys_are_checkpoint_keys(fusion):
    """LoRA key maps: the MODEL's keys are 'diffusion_model.' + the checkpoint's keys."""
    import comfy.lora

    model = native.build_model_patcher(fusion)
    keys = set(model.model.state_dict())
    assert {"diffusion_model." + k for k in fusion.state_dict()} <= keys
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    assert key_map["diffusion_model.video_model.blocks.0.cross_attn.k_fusion"] == \
        "diffusion_model.video_model.blocks.0.cross_attn.k_fusion.weight"
