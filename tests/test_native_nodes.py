"""The native-path nodes (nodes/native_nodes.py) called directly, on the demo model, inside ComfyUI's venv.

Runs only where ComfyUI imports (its venv with its tree on PYTHONPATH); elsewhere the module is skipped:
    PYTHONPATH=/path/to/ComfyUI:. /path/to/comfy_venv/bin/python -m pytest -q tests/test_native_nodes.py
Proves: the schemas (ids new and starting with Ovi, tooltips, descriptions); Ovi Empty Latent's shapes and its refusal
of bad sizes and lengths; Ovi Noise = Ovi's noise for the seed, nested zeros when off; Ovi Scheduler = Ovi's σ lists;
core SamplerCustomAdvanced + Ovi Guider + Ovi Scheduler + (Ovi Sampler Select or core euler) + Ovi Noise + Ovi Empty
Latent == ovi_core.sampler.sample_joint with the same settings and seed.
"""

from __future__ import annotations

import types

import pytest
import torch

from tests import comfy_inproc  # first: skips this module where ComfyUI is not importable, else sets up ComfyUI

_load_nodes_module, _one, _out = comfy_inproc.load_nodes_module, comfy_inproc.one, comfy_inproc.out
nn = _load_nodes_module("native_nodes")
native = _load_nodes_module("native_model")

import comfy.latent_formats  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.nested_tensor  # noqa: E402
import comfy.samplers  # noqa: E402

from ovi_core.errors import OviInputError  # noqa: E402
from ovi_core.sampler import make_noise, sample_joint  # noqa: E402
from ovi_core.schedulers import make_scheduler  # noqa: E402

OLD_IDS = {"OviModelLoader", "OviTextEncoderLoader", "OviTextEncode", "OviTextFromConditioning", "OviSampler",
           "OviVideoVAELoader", "OviVideoDecode", "OviAudioVAELoader", "OviAudioDecode", "OviMux"}
SIDE, STEPS, SEED, TOL = 64, 4, 7, 1e-5  # 64x64 pixels = 4x4 latents, 31 latent frames, 157 audio latents


@pytest.fixture(scope="module")
def custom_sampler():
    """Core's SamplerCustomAdvanced / KSamplerSelect (comfy_extras/nodes_custom_sampler.py)."""
    _, module = comfy_inproc.load_core("comfy_extras/nodes_custom_sampler.py")
    return module


def _model_space(video_raw):
    return comfy.latent_formats.Wan22().process_in(video_raw)


# ---- schemas -------------------------------------------------------------------------------------------------------
def test_schemas_ids_tooltips_descriptions():
    ids = [cls.define_schema().node_id for cls in nn.NATIVE_NODES]
    assert ids[:5] == ["OviEmptyLatent", "OviGuider", "OviScheduler", "OviSamplerSelect", "OviNoise"]  # + later packs
    assert not set(ids) & OLD_IDS and len(set(ids)) == len(ids)
    for cls in nn.NATIVE_NODES:
        schema = cls.define_schema()
        assert schema.node_id.startswith("Ovi") and schema.display_name.startswith("Ovi ")
        assert schema.category.startswith("Ovi/") and schema.description and "\n" not in schema.description
        for socket in schema.inputs:
            assert socket.tooltip, f"{schema.node_id}.{socket.id} has no tooltip"
        for socket in schema.outputs:
            assert socket.tooltip, f"{schema.node_id} output has no tooltip"


def test_native_node_inputs_follow_the_knobs():
    from tests.test_knobs import assert_inputs_follow_knobs

    compared = 0
    for cls in nn.NATIVE_NODES:
        inputs = cls.INPUT_TYPES()
        compared += assert_inputs_follow_knobs(cls.define_schema().node_id,
                                               {**inputs.get("required", {}), **inputs.get("optional", {})})
    assert compared >= 20  # empty latent 3, guider 5, scheduler 3, sampler select 1, noise 1, a/v nodes 7


# ---- Ovi Empty Latent ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, frames, audio", [(5, 31, 157), (121, 31, 157), (10, 61, 314), (241, 61, 314)])
def test_empty_latent_shapes(length, frames, audio):
    latent = _one(nn.OviEmptyLatent.execute(width=1280, height=704, length=length, batch_size=2))
    video, sound = latent["samples"].unbind()
    assert video.shape == (2, 48, frames, 44, 80) and sound.shape == (2, 20, audio)
    assert not video.any() and not sound.any() and "noise_mask" not in latent


@pytest.mark.parametrize("inputs, words", [
    ({"length": 7}, ["length 7", "5 s (121 frames)", "10 s (241 frames)"]),
    ({"length": 120}, ["length 120", "121"]),
    ({"width": 720}, ["width 720", "multiple of 32", "704 or 736"]),
    ({"width": 4096, "height": 4096}, ["4096x4096", "too large"]),
])
def test_empty_latent_refuses_bad_sizes_and_lengths(inputs, words):
    args = {"width": 704, "height": 704, "length": 5, **inputs}
    with pytest.raises(OviInputError) as refused:
        nn.OviEmptyLatent.validate_inputs(**args)
    verdict = str(refused.value)
    assert all(w in verdict for w in words), verdict
    with pytest.raises(OviInputError) as err:
        nn.OviEmptyLatent.execute(batch_size=1, **args)
    assert str(err.value) == verdict
    assert nn.OviEmptyLatent.validate_inputs(width=704, height=704, length=5) is True
    assert nn.OviEmptyLatent.validate_inputs(width=None, height=None, length=None) is True  # linked inputs


# ---- Ovi Noise, Ovi Scheduler, Ovi Sampler Select ------------------------------------------------------------------
def test_noise_is_ovis_noise_for_the_seed_and_zeros_when_off():
    latent = _one(nn.OviEmptyLatent.execute(width=SIDE, height=SIDE, length=5, batch_size=2))
    noise = _one(nn.OviNoise.execute(seed=SEED, add_noise=True))
    assert noise.seed == SEED
    video, audio = noise.generate_noise(latent).unbind()
    v, a = make_noise((48, 31, 4, 4), (157, 20), SEED)
    assert all(torch.equal(video[i], v) and torch.equal(audio[i], a.T) for i in range(2))  # each row: the seed's

    off = _one(nn.OviNoise.execute(seed=SEED, add_noise=False))
    zeros = off.generate_noise(latent)
    assert zeros.is_nested and [z.shape for z in zeros.unbind()] == [t.shape for t in latent["samples"].unbind()]
    assert not any(z.any() for z in zeros.unbind())
    with pytest.raises(OviInputError, match="joint audio\\+video LATENT"):
        noise.generate_noise({"samples": torch.zeros(1, 48, 31, 4, 4)})


@pytest.mark.parametrize("solver", ["unipc", "euler", "dpm++"])
def test_scheduler_is_ovis_sigma_list(solver):
    sigmas = _one(nn.OviScheduler.execute(solver=solver, steps=12, shift=5.0))
    ref = make_scheduler(solver, 12, 5.0).sigmas.float()
    assert sigmas.dtype == torch.float32 and torch.equal(sigmas, ref) and sigmas[-1] == 0 and len(sigmas) == 13
    with pytest.raises(OviInputError, match="shift must be a finite number"):
        nn.OviScheduler.execute(solver=solver, steps=12, shift=float("nan"))


def test_sampler_select_gives_a_ksampler():
    sampler = _one(nn.OviSamplerSelect.execute(solver="dpm++"))
    assert isinstance(sampler, comfy.samplers.KSAMPLER) and sampler.sampler_function.solver == "dpm++"


# ---- the whole native graph == Ovi's sampler -----------------------------------------------------------------------
def _graph(fusion, texts, custom_sampler, solver, sampler, *, audio_negative_socket=True, skip_layer=1,
           seed=SEED, latent=None, **sync):
    model = native.build_model_patcher(fusion, slg_layer=11)  # the guider's skip_layer must override it
    positive = [[texts.positive[None], {}]]
    if audio_negative_socket:
        negative, audio_negative = [[texts.video_negative[None], {}]], [[texts.audio_negative[None], {}]]
    else:  # what Ovi Text Encode gives: the audio negative inside the negative
        negative = [[texts.video_negative[None], {native.AUDIO_CONTEXT_KEY: texts.audio_negative[None]}]]
        audio_negative = None
    guider = _one(nn.OviGuider.execute(model=model, positive=positive, negative=negative, video_cfg=4.0,
                                       audio_cfg=3.0, skip_layer=skip_layer, audio_negative=audio_negative, **sync))
    if latent is None:
        latent = _one(nn.OviEmptyLatent.execute(width=SIDE, height=SIDE, length=5, batch_size=1))
    noise = _one(nn.OviNoise.execute(seed=seed, add_noise=True))
    sigmas = _one(nn.OviScheduler.execute(solver=solver, steps=STEPS, shift=5.0))
    out, denoised = _out(custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent))
    assert out["samples"].is_nested and denoised["samples"].is_nested
    return out["samples"].unbind()


def _reference(fusion, texts, solver, slg_layer=1, seed=SEED, **sync):
    return sample_joint(fusion, texts, video_shape=(48, 31, 4, 4), audio_shape=(157, 20), seed=seed, solver=solver,
                        steps=STEPS, shift=5.0, video_guidance=4.0, audio_guidance=3.0, slg_layer=slg_layer, **sync)


@pytest.mark.parametrize("solver, core_sampler", [("unipc", None), ("dpm++", None), ("euler", None),
                                                  ("euler", "euler")])
def test_native_graph_equals_ovi_sampler(fusion, texts, custom_sampler, solver, core_sampler):
    """SamplerCustomAdvanced(Ovi Noise, Ovi Guider 4/3 + skip layer, Ovi Sampler Select or core KSamplerSelect euler,
    Ovi Scheduler, Ovi Empty Latent) == sample_joint with the same settings and seed, to 1e-5."""
    if core_sampler is None:
        sampler = _one(nn.OviSamplerSelect.execute(solver=solver))
    else:
        sampler = _one(custom_sampler.KSamplerSelect.execute(core_sampler))
    video_raw, audio = _graph(fusion, texts, custom_sampler, solver, sampler)
    ref_v, ref_a = _reference(fusion, texts, solver)
    err_v = (_model_space(video_raw) - ref_v).abs().max().item()
    err_a = (audio.transpose(1, 2) - ref_a).abs().max().item()
    print(f"native graph, {core_sampler or 'Ovi Sampler Select'}({solver}): max |native - ovi| video {err_v:.3g}, "
          f"audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL
    assert ref_v.abs().max() > 0.1


def test_guider_takes_the_audio_negative_from_the_negative_and_switches_slg(fusion, texts, custom_sampler):
    """Without the audio_negative socket, the audio negative carried in 'negative' (Ovi Text Encode's form) gives the
    same result; skip_layer 0 is another generation (SLG really acts); a skip layer past the depth is refused."""
    sampler = _one(nn.OviSamplerSelect.execute(solver="unipc"))
    with_socket = _graph(fusion, texts, custom_sampler, "unipc", sampler)
    carried = _graph(fusion, texts, custom_sampler, "unipc", sampler, audio_negative_socket=False)
    assert all(torch.equal(x, y) for x, y in zip(with_socket, carried))
    no_slg = _graph(fusion, texts, custom_sampler, "unipc", sampler, skip_layer=0)
    ref_v, _ = _reference(fusion, texts, "unipc", slg_layer=0)
    assert (_model_space(no_slg[0]) - ref_v).abs().max() < TOL
    assert (no_slg[0] - with_socket[0]).abs().max() > 1e-3

    model = native.build_model_patcher(fusion)
    cond = [[texts.positive[None], {}]]
    with pytest.raises(OviInputError, match="skip_layer 3 is past the model's 3 fused blocks"):
        nn.OviGuider.execute(model=model, positive=cond, negative=cond, video_cfg=4.0, audio_cfg=3.0, skip_layer=3)
    with pytest.raises(OviInputError, match="video_cfg must be a finite number"):
        nn.OviGuider.execute(model=model, positive=cond, negative=cond, video_cfg=float("nan"), audio_cfg=3.0,
                             skip_layer=1)
    with pytest.raises(OviInputError, match="not an Ovi model"):
        nn.OviGuider.execute(model=types.SimpleNamespace(model=object()), positive=cond, negative=cond, video_cfg=4.0,
                             audio_cfg=3.0, skip_layer=1)
    assert model.model_options.get("transformer_options", {}).get(native.SLG_OPTION) is None  # the input unchanged


def test_guider_sync_guidance(fusion, texts, custom_sampler):
    """Ovi Guider's sync_guidance: 0 is bit-identical to the guider without the input (no extra pass); > 0 changes
    the clip and equals sample_joint with the same sync settings (same formula on the denoised estimates)."""
    sampler = _one(nn.OviSamplerSelect.execute(solver="unipc"))
    today = _graph(fusion, texts, custom_sampler, "unipc", sampler)
    off = _graph(fusion, texts, custom_sampler, "unipc", sampler, sync_guidance=0.0, sync_cut="audio_to_video")
    assert all(torch.equal(x, y) for x, y in zip(today, off))
    for cut in ("both", "audio_to_video"):
        on = _graph(fusion, texts, custom_sampler, "unipc", sampler, sync_guidance=1.5, sync_cut=cut)
        ref_v, ref_a = _reference(fusion, texts, "unipc", sync_guidance=1.5, sync_cut=cut)
        err_v = (_model_space(on[0]) - ref_v).abs().max().item()
        err_a = (on[1].transpose(1, 2) - ref_a).abs().max().item()
        print(f"guider sync 1.5 ({cut}): max |native - ovi| video {err_v:.3g}, audio {err_a:.3g}")
        assert err_v < TOL and err_a < TOL
        assert (on[0] - today[0]).abs().max() > 1e-3
    model = native.build_model_patcher(fusion)
    cond = [[texts.positive[None], {}]]
    with pytest.raises(OviInputError, match="sync_cut"):
        nn.OviGuider.execute(model=model, positive=cond, negative=cond, video_cfg=4.0, audio_cfg=3.0, skip_layer=1,
                             sync_guidance=1.0, sync_cut="audio")
    schema = nn.OviGuider.define_schema()
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["sync_guidance"].optional and inputs["sync_guidance"].default == 0.0 and inputs["sync_cut"].tooltip


def test_no_noise_second_stage_runs_on_the_joint_latent(fusion, texts, custom_sampler):
    """Ovi Noise with add_noise off (core DisableNoise fails on nested latents): a second pass over the last σ
    values of a first generation runs and changes the result only a little."""
    sampler = _one(custom_sampler.KSamplerSelect.execute("euler"))
    first = _graph(fusion, texts, custom_sampler, "euler", sampler)
    latent = {"samples": comfy.nested_tensor.NestedTensor(tuple(t.clone() for t in first))}
    model = native.build_model_patcher(fusion, slg_layer=1)
    cond = [[texts.positive[None], {}]]
    guider = _one(nn.OviGuider.execute(model=model, positive=cond, negative=[[texts.video_negative[None], {}]],
                                       video_cfg=4.0, audio_cfg=3.0, skip_layer=1))
    sigmas = _one(nn.OviScheduler.execute(solver="euler", steps=8, shift=5.0))[-3:]
    noise = _one(nn.OviNoise.execute(seed=0, add_noise=False))
    out, _ = _out(custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent))
    for before, after in zip(first, out["samples"].unbind()):
        assert after.shape == before.shape and torch.isfinite(after).all()


def test_ovi_solver_runs_on_a_sigma_list_core_uni_pc_has_edited(fusion, texts, custom_sampler):
    """Core uni_pc sets the last σ of the SIGMAS it is given to 0.001 in place (a scheduler node's cached output is
    then changed for every later use); Ovi Sampler Select restores the 0 and gives Ovi's result."""
    sigmas = _one(nn.OviScheduler.execute(solver="unipc", steps=STEPS, shift=5.0))
    model = native.build_model_patcher(fusion, slg_layer=1)
    guider = _one(nn.OviGuider.execute(model=model, positive=[[texts.positive[None], {}]],
                                       negative=[[texts.video_negative[None], {}]], video_cfg=4.0, audio_cfg=3.0,
                                       skip_layer=1, audio_negative=[[texts.audio_negative[None], {}]]))
    latent = _one(nn.OviEmptyLatent.execute(width=SIDE, height=SIDE, length=5, batch_size=1))
    noise = _one(nn.OviNoise.execute(seed=SEED, add_noise=True))
    custom_sampler.SamplerCustomAdvanced.execute(noise, guider, _one(custom_sampler.KSamplerSelect.execute("uni_pc")),
                                                 sigmas, latent)
    assert abs(float(sigmas[-1]) - 0.001) < 1e-6  # core's in-place edit
    out, _ = _out(custom_sampler.SamplerCustomAdvanced.execute(
        noise, guider, _one(nn.OviSamplerSelect.execute(solver="unipc")), sigmas, latent))
    assert float(sigmas[-1]) == 0.0
    video_raw, audio = out["samples"].unbind()
    ref_v, ref_a = _reference(fusion, texts, "unipc")
    assert (_model_space(video_raw) - ref_v).abs().max() < TOL and (audio.transpose(1, 2) - ref_a).abs().max() < TOL


def test_a_batch_of_two_gives_the_seeds_clip_twice(fusion, texts, custom_sampler):
    """batch_size 2: Ovi Noise gives each row the seed's noise, so each row is the batch-1 result (the batched
    positive/negative rows and the skip-layer rows line up)."""
    sampler = _one(nn.OviSamplerSelect.execute(solver="unipc"))
    latent = _one(nn.OviEmptyLatent.execute(width=SIDE, height=SIDE, length=5, batch_size=2))
    video, audio = _graph(fusion, texts, custom_sampler, "unipc", sampler, latent=latent)
    ref_v, ref_a = _reference(fusion, texts, "unipc")
    for row in range(2):
        assert (_model_space(video[row:row + 1]) - ref_v).abs().max() < TOL
        assert (audio[row:row + 1].transpose(1, 2) - ref_a).abs().max() < TOL
