"""The joint sampler (golden runs of the tiny model, seeds, guidance wiring, I2V, progress/interrupt, bad arguments)
and the size rules (ovi_core.sizes)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conformance.cases import sampling
from ovi_core import knobs
from ovi_core.errors import OviInputError, OviInterrupted
from ovi_core.sampler import (
    PromptEmbeddings,
    SamplingSettings,
    make_noise,
    sample_joint,
)
from ovi_core.schedulers import make_scheduler
from ovi_core.sizes import image_size_for_area, latent_shapes, snap_to_area, video_size_for_variant

TOL = sampling.TOLERANCE
FAST = dict(batched_cfg=True, cache_text=True)
NAIVE = dict(batched_cfg=False, cache_text=False)


def _case(golden_dir: Path, i: int) -> Path:
    return golden_dir / f"sampling_case_{i}.safetensors"


# ---- golden runs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [FAST, NAIVE], ids=["batched+cached", "naive"])
@pytest.mark.parametrize("i", [0, 1, 2])  # unipc t2v, unipc i2v, euler t2v
def test_golden_sampling_case(golden_dir, tiny_fusion, i, mode):
    steps = []
    video, audio, d = sampling.run_case(_case(golden_dir, i), callback=lambda k, n, lat: steps.append(lat), **mode)
    torch.testing.assert_close(video, d["final.video_latent"], atol=TOL, rtol=0)
    torch.testing.assert_close(audio, d["final.audio_latent"], atol=TOL, rtol=0)
    # and every intermediate latent (what the reference's scheduler returned at step k)
    assert len(steps) == d["sched.timesteps"].numel()
    for k, lat in enumerate(steps):
        torch.testing.assert_close(lat.video[0], d[f"step{k}.video_out"], atol=TOL, rtol=0)
        torch.testing.assert_close(lat.audio[0], d[f"step{k}.audio_out"], atol=TOL, rtol=0)
    if "cond.first_frame_latent" in d:  # image-to-video: the final first frame is the image latent itself
        assert torch.equal(video[:, :1], d["cond.first_frame_latent"])


def test_conformance_runner(golden_dir):
    for i in range(3):
        outcome = sampling.run(_case(golden_dir, i))
        assert outcome.passed and outcome.max_abs_err < 1e-4, outcome


def test_fast_loop_equals_naive_loop(golden_dir, tiny_fusion):
    fast = sampling.run_case(_case(golden_dir, 1), **FAST)
    naive = sampling.run_case(_case(golden_dir, 1), **NAIVE)
    torch.testing.assert_close(fast[0], naive[0], atol=2e-5, rtol=0)
    torch.testing.assert_close(fast[1], naive[1], atol=2e-5, rtol=0)


def test_out_of_memory_falls_back_to_two_passes(golden_dir, tiny_fusion):
    class OomOnBatchOf2(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.cfg, self.calls = inner, inner.cfg, []

        device = property(lambda self: self.inner.device)

        def prepare_text(self, *a, **kw):
            return self.inner.prepare_text(*a, **kw)

        def forward(self, video, audio, t, *a, **kw):
            self.calls.append(video.shape[0])
            if video.shape[0] == 2:
                raise torch.OutOfMemoryError("simulated")
            return self.inner(video, audio, t, *a, **kw)

    d = load_file(str(_case(golden_dir, 0)))
    model = OomOnBatchOf2(tiny_fusion)
    video, audio = sample_joint(
        model, PromptEmbeddings(d["text.pos"], d["text.video_neg"], d["text.audio_neg"]),
        video_noise=d["init.video_noise"], audio_noise=d["init.audio_noise"], **sampling.case_settings(d, {"case": {
            "solver": "unipc", "shift": 5.0, "gv": 4.0, "ga": 3.0, "slg": 1}}),
    )
    assert model.calls == [2] + [1] * 10  # tried batched once, then two passes per step
    torch.testing.assert_close(video[0], d["final.video_latent"], atol=TOL, rtol=0)
    torch.testing.assert_close(audio[0], d["final.audio_latent"], atol=TOL, rtol=0)


# ---- seeds ---------------------------------------------------------------------------------------------------------
def test_seed_gives_the_reference_noise(golden_dir):
    d = load_file(str(_case(golden_dir, 2)))
    video, audio = make_noise(d["init.video_noise"].shape, d["init.audio_noise"].shape, int(d["in.seed"]))
    # Same generator, same seed, same draw order: equal up to the last bit of float32. torch's normal sampler is
    # vectorised (AVX2/AVX512 give identical bits); its scalar fallback (ATEN_CPU_CAPABILITY=default) computes the
    # Box-Muller transform (log, sqrt, cos in float32) with scalar libm calls and differs by a few ulp (measured
    # 1.3e-6 at |x| <= 4, where 1 ulp is 2.4e-7..4.8e-7). A wrong seed or a different draw order gives O(1)
    # differences, so 1e-5 still proves the reference's noise.
    torch.testing.assert_close(video, d["init.video_noise"], atol=1e-5, rtol=0)
    torch.testing.assert_close(audio, d["init.audio_noise"], atol=1e-5, rtol=0)


def test_seed_is_reproducible(golden_dir, tiny_fusion):
    d = load_file(str(_case(golden_dir, 0)))
    text = PromptEmbeddings(d["text.pos"], d["text.video_neg"], d["text.audio_neg"])
    kw = dict(video_shape=(48, 2, 4, 4), audio_shape=(9, 20), solver="unipc", steps=2, slg_layer=1)
    v1, a1 = sample_joint(tiny_fusion, text, seed=7, **kw)
    v2, a2 = sample_joint(tiny_fusion, text, seed=7, **kw)
    v3, _ = sample_joint(tiny_fusion, text, seed=8, **kw)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    assert not torch.equal(v1, v3)


# ---- wiring, with a model that records its calls -------------------------------------------------------------------
class RecordingModel(torch.nn.Module):
    """Follows OviFusion's contract; the output depends on the text so that guidance is visible."""

    class cfg:  # noqa: N801
        num_layers = 12

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.calls, self.prepared = [], []

    def prepare_text(self, video_context, audio_context):
        self.prepared.append((video_context, audio_context))
        return ("ctx", [c.sum().item() for c in video_context], [c.sum().item() for c in audio_context])

    def forward(self, video, audio, t, video_context=None, audio_context=None, *, text=None,
                first_frame_is_clean=False, slg_layer=0, skip_mask=None):
        if text is None:
            text = self.prepare_text(video_context, audio_context)
        self.calls.append(dict(batch=video.shape[0], t=t.clone(), text=text, ffc=first_frame_is_clean, slg=slg_layer,
                               skip=None if skip_mask is None else skip_mask.tolist(), frame0=video[:, :, :1].clone()))
        tv = torch.tensor(text[1]).view(-1, 1, 1, 1, 1)
        ta = torch.tensor(text[2]).view(-1, 1, 1)
        return 0.5 * video + tv, 0.5 * audio + ta


def make_ts(solver, n):
    return make_scheduler(solver, n, 5.0).timesteps.tolist()


def _text():
    return PromptEmbeddings(torch.full((3, 4096), 1.0), torch.full((2, 4096), 2.0), torch.full((5, 4096), 3.0))


def _noise():
    return torch.randn(48, 3, 2, 4, generator=torch.Generator().manual_seed(0)), torch.randn(6, 20)


def test_batched_passes_and_cached_text():
    model = RecordingModel()
    vn, an = _noise()
    sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=3, slg_layer=2)
    pos, vneg, aneg = 3 * 4096.0, 2 * 2 * 4096.0, 3 * 5 * 4096.0
    assert len(model.prepared) == 1  # text prepared once per generation
    assert len(model.calls) == 3  # one batched forward per step
    for call, t in zip(model.calls, make_ts("unipc", 3)):
        assert call["batch"] == 2 and call["skip"] == [False, True] and call["slg"] == 2
        # video tower: prompt / video negative; audio tower: prompt / audio negative
        assert call["text"][1:] == ([pos, vneg], [pos, aneg])
        assert call["t"].dtype == torch.int64 and call["t"].tolist() == [t, t]


def test_naive_two_passes_skip_layer_only_in_negative_pass():
    model = RecordingModel()
    vn, an = _noise()
    sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=2, slg_layer=3, solver="euler", **NAIVE)
    assert len(model.calls) == 4
    pos, neg = model.calls[0], model.calls[1]
    assert pos["batch"] == neg["batch"] == 1
    assert pos["slg"] == 0 and neg["slg"] == 3 and neg["skip"] is None
    assert pos["t"].dtype == torch.float32 and pos["t"].item() == pytest.approx(1000.0)


def test_guidance_combination():
    """v = neg + g·(pos − neg) per modality: with the recording model pos − neg is a known constant."""
    model = RecordingModel()
    vn, an = _noise()
    got = {}
    sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=1, solver="euler", video_guidance=2.5,
                 audio_guidance=0.0, slg_layer=0, callback=lambda k, n, lat: got.update(lat=lat))
    lat = got["lat"]
    pos_v, neg_v = 3 * 4096.0, 2 * 2 * 4096.0
    guided_v = 0.5 * vn + neg_v + 2.5 * (pos_v - neg_v)
    guided_a = 0.5 * an + 3 * 5 * 4096.0  # g_a = 0: the negative pass only
    torch.testing.assert_close(lat.video_denoised[0], vn - 1.0 * guided_v)
    torch.testing.assert_close(lat.audio_denoised[0], an - 1.0 * guided_a)
    torch.testing.assert_close(lat.video[0], vn - guided_v)  # one euler step from σ = 1 to 0


def test_first_frame_overwritten_before_every_forward():
    model = RecordingModel()
    vn, an = _noise()
    first = torch.full((48, 1, 2, 4), 0.25)
    video, _ = sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=3, first_frame_latent=first)
    assert all(c["ffc"] for c in model.calls)
    assert all(torch.equal(c["frame0"], first.expand_as(c["frame0"])) for c in model.calls)
    assert torch.equal(video[0, :, :1], first)
    assert torch.equal(vn, _noise()[0])  # the caller's noise tensor is not modified


def test_callback_progress_and_stop():
    model = RecordingModel()
    vn, an = _noise()
    seen = []
    sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=4,
                 callback=lambda k, n, lat: seen.append((k, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Stop(Exception):
        pass

    def stop_at_2(k, n, lat):
        if k == 2:
            raise Stop

    model = RecordingModel()
    with pytest.raises(Stop):
        sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=4, callback=stop_at_2)
    assert len(model.calls) == 2


def test_interrupt_hook():
    model = RecordingModel()
    vn, an = _noise()
    flags = iter([False, False, True])
    with pytest.raises(OviInterrupted, match="before step 3 of 5"):
        sample_joint(model, _text(), video_noise=vn, audio_noise=an, steps=5, should_interrupt=lambda: next(flags))
    assert len(model.calls) == 2


# ---- settings and bad arguments ------------------------------------------------------------------------------------
def test_default_settings_are_the_reference_defaults():
    s = SamplingSettings()
    settings = (s.solver, s.steps, s.shift, s.video_guidance, s.audio_guidance, s.slg_layer)
    assert settings == ("unipc", 50, 5.0, 4.0, 3.0, 11)
    assert knobs.VIDEO_NEGATIVE.default == "jitter, bad hands, blur, distortion"
    assert knobs.AUDIO_NEGATIVE.default == "robotic, muffled, echo, distorted"
    assert set(s.as_kwargs()) == {"solver", "steps", "shift", "video_guidance", "audio_guidance", "slg_layer", "seed",
                                 "sync_guidance", "sync_cut", "cache_threshold"}
    assert (s.sync_guidance, s.sync_cut) == (0.0, "both")  # off


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=0), "steps"),
        (dict(solver="heun"), "unknown solver"),
        (dict(shift=-1.0), "shift"),
        (dict(video_guidance=-1.0), "video_guidance"),
        (dict(audio_guidance=float("inf")), "audio_guidance"),
        (dict(slg_layer=-2), "slg_layer"),
        (dict(slg_layer=1.5), "slg_layer"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(OviInputError, match=match):
        SamplingSettings(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(slg_layer=12), r"between -1 and 11"),  # the model has 12 blocks
        (dict(steps=0), "steps"),
        (dict(video_guidance=-0.5), "video_guidance"),
        (dict(video_noise=torch.zeros(16, 3, 2, 4)), r"must be \[48"),
        (dict(video_noise=torch.zeros(48, 3, 3, 4)), "even"),
        (dict(audio_noise=torch.zeros(6, 16)), r"\[L, 20\]"),
        (dict(audio_noise=None), "both video_noise and audio_noise"),
        (dict(first_frame_latent=torch.zeros(48, 2, 2, 4)), "first_frame_latent"),
        (dict(first_frame_latent=torch.zeros(48, 1, 4, 4)), "latent cells"),
        (dict(text="a cat"), "PromptEmbeddings"),
    ],
)
def test_bad_sample_arguments(kw, match):
    vn, an = _noise()
    args = dict(video_noise=vn, audio_noise=an, steps=2) | kw
    text = args.pop("text", _text())
    with pytest.raises(OviInputError, match=match):
        sample_joint(RecordingModel(), text, **args)


def test_noise_needs_shapes_and_seed():
    with pytest.raises(OviInputError, match="seed"):
        sample_joint(RecordingModel(), _text(), video_shape=(48, 1, 2, 2), audio_shape=(4, 20), steps=1)
    with pytest.raises(OviInputError, match="video_shape"):
        make_noise((16, 1, 2, 2), (4, 20), 0)


# ---- sizes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hw, area, expected",
    [
        ((720, 720), 720 * 720, (704, 704)),  # 22.5 rounds half to even: 22 -> 704, as the reference
        ((704, 1280), 960 * 960, (704, 1280)),
        ((1280, 704), 720 * 720, (960, 544)),
        ((704, 1280), 720 * 720, (544, 960)),
        ((448, 1120), 720 * 720, (448, 1152)),
        ((100, 100), 960 * 960, (960, 960)),
        ((10, 5000), 720 * 720, (32, 16096)),  # sides never below 32
    ],
)
def test_snap_to_area(hw, area, expected):
    assert snap_to_area(*hw, area) == expected


def test_size_warning_when_far_from_area(caplog):
    with caplog.at_level(logging.WARNING, logger="ovi_core.sizes"):
        assert video_size_for_variant(704, 1280, 960 * 960) == (704, 1280)  # 2 % off: quiet
        assert not caplog.records
        assert video_size_for_variant(512, 512, 720 * 720, "720x720_5s") == (704, 704)
    assert len(caplog.records) == 1 and "more than 10%" in caplog.text and "704x704" in caplog.text


def test_latent_shapes_per_variant():
    s = latent_shapes("720x720_5s", 720, 720)
    assert (s.height, s.width, s.video, s.audio) == (704, 704, (48, 31, 44, 44), (157, 20))
    assert s.num_video_tokens == 31 * 22 * 22
    s = latent_shapes("960x960_10s", 960, 960)
    assert (s.video, s.audio) == ((48, 61, 60, 60), (314, 20))
    assert latent_shapes("960x960_5s", 512, 960, snap=False).video == (48, 31, 32, 60)
    with pytest.raises(OviInputError, match="not a multiple of 32.*use 480 or 512"):
        latent_shapes("960x960_5s", 500, 960, snap=False)
    # exact sizes are capped at MAX_AREA_FACTOR x the trained area: 1920x1056 fits the 960 models, 4096x4096 not
    assert latent_shapes("960x960_5s", 1056, 1920, snap=False).video == (48, 31, 66, 120)
    with pytest.raises(OviInputError, match=r"4096x4096 \(16,777,216 pixels\) is too large.*at most 2,073,600"):
        latent_shapes("960x960_5s", 4096, 4096, snap=False)
    with pytest.raises(OviInputError, match="at most 1,166,400"):
        latent_shapes("720x720_5s", 1088, 1088, snap=False)
    with pytest.raises(OviInputError, match="unknown Ovi variant"):
        latent_shapes("1080p", 720, 720)


def test_image_size_for_area():
    assert image_size_for_area(720, 720, 720 * 720) == (704, 704)
    assert image_size_for_area(1080, 1920, 720 * 720) == (544, 960)
    assert image_size_for_area(513, 997, 960 * 960) == (704, 1344)


@pytest.mark.parametrize("hw", [(0, 720), (-5, 720), (720.5, 720), (True, 720), ("720", 720), (720, 20000)])
def test_bad_sizes(hw):
    with pytest.raises(OviInputError):
        snap_to_area(*hw, 720 * 720)
