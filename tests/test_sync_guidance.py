"""Sync guidance (the lip-sync knob): the fusion cut in the forward, and the extra pass in ovi_core.sampler.

Proves: a cut forward equals the forward of a copy whose cut fusion attention is zeroed (v_fusion weight and bias = 0,
so that attention adds exactly 0); with the audio→video direction cut the video output does not depend on the audio
input at all (and vice versa), while the audio output still does (the changed video stream feeds the audio tower from
the next block on; after one block it is still bit-identical); sample_joint with scale 0 is bit-identical to today and
runs no extra forward; scale > 0 runs one more forward per step and changes the result.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.errors import OviInputError
from ovi_core.sampler import PromptEmbeddings, SamplingSettings, sample_joint

CUT_TOL = 1e-6


@pytest.fixture(scope="module")
def case(golden_dir, tiny_fusion):
    d = load_file(str(golden_dir / "forward_case_0.safetensors"))
    text = tiny_fusion.prepare_text([d["in.video_context"]], [d["in.audio_context"]])
    return d["in.video_latent"], d["in.audio_latent"], d["in.t"], text


def _zeroed(model, towers):
    """A copy of the model whose fusion value projections are zero in the given towers: that attention adds 0."""
    m = copy.deepcopy(model)
    for tower in towers:
        for block in getattr(m, tower).blocks:
            block.cross_attn.v_fusion.weight.data.zero_()
            block.cross_attn.v_fusion.bias.data.zero_()
    return m


def _err(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("cut, towers", [
    ("both", ("video_model", "audio_model")),
    ("audio_to_video", ("video_model",)),  # the video tower's fusion attends to the audio stream
    ("video_to_audio", ("audio_model",)),
])
def test_cut_forward_equals_the_model_without_that_fusion_term(tiny_fusion, case, cut, towers):
    video, audio, t, text = case
    got = tiny_fusion(video, audio, t, text=text, fusion_cut=cut)
    want = _zeroed(tiny_fusion, towers)(video, audio, t, text=text)
    err = _err(got, want)
    print(f"cut {cut}: max |cut - zeroed v_fusion| = {err:.3g}")
    assert err <= CUT_TOL
    full = tiny_fusion(video, audio, t, text=text)
    assert _err(got, full) > 1e-3  # and the cut is not a no-op


def test_cut_removes_the_dependence_on_the_other_input(tiny_fusion, case):
    video, audio, t, text = case
    run = lambda v, a, cut: tiny_fusion(v, a, t, text=text, fusion_cut=cut)  # noqa: E731
    for cut in ("both", "audio_to_video"):  # the video tower never sees the audio
        assert torch.equal(run(video, audio, cut)[0], run(video, audio + 0.5, cut)[0])
    for cut in ("both", "video_to_audio"):  # the audio tower never sees the video
        assert torch.equal(run(video, audio, cut)[1], run(video + 0.5, audio, cut)[1])
    # one direction cut: the other direction still carries information
    assert (run(video + 0.5, audio, "audio_to_video")[1] - run(video, audio, "audio_to_video")[1]).abs().max() > 1e-3
    assert (run(video, audio + 0.5, "video_to_audio")[0] - run(video, audio, "video_to_audio")[0]).abs().max() > 1e-3
    with pytest.raises(OviInputError, match="fusion_cut"):
        run(video, audio, "audio")


def test_one_direction_cut_changes_the_sender_only_through_later_blocks(tiny_fusion, case):
    """Cutting audio→video leaves the audio output of a one-block model bit-identical (in a block the audio tower
    reads the video stream before the video cross step); with more blocks the changed video reaches the audio."""
    video, audio, t, text = case
    full, cut = tiny_fusion(video, audio, t, text=text), tiny_fusion(video, audio, t, text=text, fusion_cut="audio_to_video")
    assert (full[1] - cut[1]).abs().max() > 1e-4  # 3 blocks: the audio output moves too
    one = copy.deepcopy(tiny_fusion)
    one.video_model.blocks, one.audio_model.blocks = one.video_model.blocks[:1], one.audio_model.blocks[:1]
    one.cfg = dataclasses.replace(one.cfg, video=dataclasses.replace(one.cfg.video, num_layers=1),
                                  audio=dataclasses.replace(one.cfg.audio, num_layers=1))
    text1 = dataclasses.replace(text, video_kv=text.video_kv[:1], audio_kv=text.audio_kv[:1])
    full, cut = one(video, audio, t, text=text1), one(video, audio, t, text=text1, fusion_cut="audio_to_video")
    assert torch.equal(full[1], cut[1]) and not torch.equal(full[0], cut[0])
    full, cut = one(video, audio, t, text=text1), one(video, audio, t, text=text1, fusion_cut="video_to_audio")
    assert not torch.equal(full[1], cut[1])  # in the same block the video reads the already-updated audio stream


# ---- the sampler ---------------------------------------------------------------------------------------------------
class _Counting:
    """The model, counting forwards and the fusion cuts asked for."""

    def __init__(self, inner):
        self.inner, self.cuts = inner, []
        self.cfg, self.device = inner.cfg, inner.device

    def prepare_text(self, *a, **kw):
        return self.inner.prepare_text(*a, **kw)

    def __call__(self, *a, **kw):
        self.cuts.append(kw.get("fusion_cut", "none"))
        return self.inner(*a, **kw)


@pytest.fixture(scope="module")
def texts_and_kw():
    g = torch.Generator().manual_seed(1)
    texts = PromptEmbeddings(torch.randn(7, 4096, generator=g), torch.randn(5, 4096, generator=g),
                             torch.randn(6, 4096, generator=g))
    return texts, dict(video_shape=(48, 3, 4, 4), audio_shape=(13, 20), seed=7, steps=3, slg_layer=1)


@pytest.mark.parametrize("batched", [True, False])
def test_scale_zero_is_todays_sampler_bit_for_bit(tiny_fusion, texts_and_kw, batched):
    texts, kw = texts_and_kw
    today = sample_joint(tiny_fusion, texts, batched_cfg=batched, **kw)
    for cut in ("both", "audio_to_video"):
        model = _Counting(tiny_fusion)
        got = sample_joint(model, texts, batched_cfg=batched, sync_guidance=0.0, sync_cut=cut, **kw)
        assert torch.equal(got[0], today[0]) and torch.equal(got[1], today[1])
        assert set(model.cuts) == {"none"}  # no extra pass
        assert len(model.cuts) == kw["steps"] * (1 if batched else 2)


@pytest.mark.parametrize("cut", ["both", "audio_to_video", "video_to_audio"])
def test_scale_above_zero_runs_the_cut_pass_and_changes_the_output(tiny_fusion, texts_and_kw, cut):
    texts, kw = texts_and_kw
    today = sample_joint(tiny_fusion, texts, **kw)
    model = _Counting(tiny_fusion)
    got = sample_joint(model, texts, sync_guidance=2.0, sync_cut=cut, **kw)
    assert model.cuts.count(cut) == kw["steps"]
    dv, da = (got[0] - today[0]).abs().max().item(), (got[1] - today[1]).abs().max().item()
    print(f"sync 2.0, cut {cut}: max change video {dv:.3g}, audio {da:.3g}")
    pushed = {"both": (dv, da), "audio_to_video": (dv,), "video_to_audio": (da,)}[cut]
    assert min(pushed) > 1e-3


def test_sync_pass_formula_on_one_step(tiny_fusion, texts_and_kw):
    """One euler step: v = v_guided + s·(v_pos − v_cut) on the cut-receiving modality only (audio_to_video: video)."""
    texts, kw = texts_and_kw
    kw = {**kw, "steps": 1, "solver": "euler", "slg_layer": 0}
    s = 1.5
    base = sample_joint(tiny_fusion, texts, **kw)
    got = sample_joint(tiny_fusion, texts, sync_guidance=s, sync_cut="audio_to_video", **kw)
    assert torch.equal(got[1], base[1])  # audio not pushed
    # the extra term: x1 = x0 + (σ1 − σ0)·v, one step from σ0 = 1 to σ1 = 0: x1 = x0 − v
    from ovi_core.sampler import make_noise

    v0, a0 = make_noise(kw["video_shape"], kw["audio_shape"], kw["seed"])
    text = tiny_fusion.prepare_text([texts.positive], [texts.positive])
    t = torch.tensor([1000.0])
    pos = tiny_fusion(v0[None], a0[None], t, text=text)
    cut = tiny_fusion(v0[None], a0[None], t, text=text, fusion_cut="audio_to_video")
    torch.testing.assert_close(base[0] - got[0], s * (pos[0] - cut[0]), atol=1e-5, rtol=0)


def test_bad_sync_settings_are_refused(tiny_fusion, texts_and_kw):
    texts, kw = texts_and_kw
    with pytest.raises(OviInputError, match="sync_guidance"):
        sample_joint(tiny_fusion, texts, sync_guidance=-1.0, **kw)
    with pytest.raises(OviInputError, match="sync_cut"):
        SamplingSettings(sync_cut="audio")
    assert SamplingSettings(sync_guidance=1.0, sync_cut="video_to_audio").as_kwargs()["sync_cut"] == "video_to_audio"


# ---- the Ovi Sampler node and the CLI ------------------------------------------------------------------------------
def test_ovi_sampler_node_sync_inputs():
    """Optional inputs, default 0 = off: leaving them out (an old workflow) is bit-identical to sync 0; > 0 changes
    the clip; the CLI takes --sync-guidance / --sync-cut."""
    from nodes.bridge import DEMO_ENTRY
    from ovi_core.cli import build_parser
    from tests.test_nodes import PROMPT, M, run, sample, short

    (model,) = run("OviModelLoader", model_name=DEMO_ENTRY, variant="auto", weight_dtype="auto", attention="sdpa",
                   memory_mode="all on GPU", swap_blocks=0)
    short(model)
    (te,) = run("OviTextEncoderLoader", text_encoder_name=DEMO_ENTRY, precision="auto")
    text, *_ = run("OviTextEncode", text_encoder=te, prompt=PROMPT, video_negative="blur", audio_negative="echo",
                   variant="720x720_5s")
    old = sample(model, text)
    off = sample(model, text, sync_guidance=0.0, sync_cut="video_to_audio")
    on = sample(model, text, sync_guidance=1.0, sync_cut="both")
    assert all(torch.equal(a["samples"], b["samples"]) for a, b in zip(old, off))
    assert all((a["samples"] - b["samples"]).abs().max() > 1e-3 for a, b in zip(old, on))
    optional = M["OviSampler"].INPUT_TYPES()["optional"]
    assert optional["sync_guidance"][1]["default"] == 0.0 and optional["sync_cut"][1]["tooltip"]
    with pytest.raises(OviInputError, match="sync_guidance"):
        sample(model, text, sync_guidance=float("nan"))

    args = build_parser().parse_args(["generate", "--demo", "--prompt", "x", "--sync-guidance", "1.5",
                                      "--sync-cut", "audio_to_video"])
    assert (args.sync_guidance, args.sync_cut) == (1.5, "audio_to_video")
