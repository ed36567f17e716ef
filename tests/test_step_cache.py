"""Step caching: Ovi's own per-modality step cache (ovi_core.sampler, any venv) and core ComfyUI's EasyCache and
LazyCache on the Ovi MODEL (inside ComfyUI's venv: tests/test_in_comfy_venv.py runs this file there; elsewhere those
tests skip).

Proves: with the cache on, fewer transformer forwards run (``OviFusion.forward`` calls are counted); a zero threshold
gives the very bits of no cache."""

from __future__ import annotations

import pytest
import torch

try:  # first where ComfyUI is importable (sets it up for the CPU); elsewhere its tests skip
    from tests import comfy_inproc
except pytest.skip.Exception:
    comfy_inproc = None

from ovi_core.errors import OviInputError
from ovi_core.fusion import OviFusion
from ovi_core.sampler import SamplingSettings, StepCache, make_noise, sample_joint

F, H, W, L = 3, 4, 4, 13  # latent sizes: 3 frames of 4x4, 13 audio steps
SEED = 7
CORE_THRESHOLD = 1.0  # EasyCache / LazyCache: the untrained demo model changes a lot per step (docs/speed.md)


class _Counter:
    """Counts OviFusion.forward calls (patched on the class: also seen through ComfyUI's wrappers and torch.compile)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        forward = OviFusion.forward

        def counted(module, *args, **kwargs):
            self.calls += 1
            return forward(module, *args, **kwargs)

        monkeypatch.setattr(OviFusion, "forward", counted)


def _sample(fusion, texts, steps, **kw):
    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    return sample_joint(fusion, texts, video_noise=v, audio_noise=a, solver="unipc", steps=steps, slg_layer=1, **kw)


# ---- Ovi's step cache (ovi_core.sampler) ---------------------------------------------------------------------------
def test_zero_threshold_is_bit_identical_and_runs_every_step(fusion, texts, monkeypatch):
    ref_v, ref_a = _sample(fusion, texts, 8)
    counter = _Counter(monkeypatch)
    cache = StepCache(0.0, 8)
    out_v, out_a = _sample(fusion, texts, 8, cache=cache)
    assert torch.equal(out_v, ref_v) and torch.equal(out_a, ref_a)
    assert counter.calls == 8 and cache.skipped == 0  # one batched forward (positive + negative rows) per step


def test_threshold_skips_forwards_and_stays_close(fusion, texts, monkeypatch):
    steps = 20
    ref_v, ref_a = _sample(fusion, texts, steps)
    counter = _Counter(monkeypatch)
    cache = StepCache(0.5, steps)  # the untrained demo model's velocities change 30-70 % per step (docs/speed.md)
    out_v, out_a = _sample(fusion, texts, steps, cache=cache)
    assert cache.skipped > 0 and counter.calls == steps - cache.skipped
    rel_v = ((out_v - ref_v).norm() / ref_v.norm()).item()
    rel_a = ((out_a - ref_a).norm() / ref_a.norm()).item()
    print(f"threshold 0.5, {steps} steps: {cache.skipped} skipped; relative error video {rel_v:.3g}, audio {rel_a:.3g}")
    assert rel_v < 0.5 and rel_a < 0.5  # an approximation of the same clip, not another one
    # a larger threshold skips at least as much
    bigger = StepCache(1.0, steps)
    _sample(fusion, texts, steps, cache=bigger)
    assert bigger.skipped >= cache.skipped


def test_cache_decides_per_modality():
    """A step is skipped only while both modalities' accumulated changes stay below the threshold: a fast-changing
    audio velocity keeps the model running even when the video has settled."""
    cache = StepCache(0.1, 10)
    video = torch.ones(4)
    cache.computed(0, video, torch.ones(4))
    cache.computed(1, video * 1.01, torch.ones(4) * 2.0)  # video 1 % per step, audio 100 %
    assert cache.reuse(2) is None
    cache.computed(2, video * 1.02, torch.ones(4) * 2.01)  # now audio 0.5 %, video 1 %
    assert cache.reuse(3) is not None and cache.skipped == 1
    assert cache.reuse(9) is None  # the last step always runs


def test_cache_threshold_setting_and_validation(fusion, texts, monkeypatch):
    assert SamplingSettings().cache_threshold == 0.0  # off by default
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(OviInputError, match="cache_threshold"):
            SamplingSettings(cache_threshold=bad)
    counter = _Counter(monkeypatch)
    _sample(fusion, texts, 12, cache_threshold=0.5)
    assert counter.calls < 12


# ---- core EasyCache / LazyCache on the Ovi MODEL (ComfyUI's venv) -------------------------------------------------
@pytest.fixture(scope="module")
def comfy_env():
    if comfy_inproc is None:
        pytest.skip("ComfyUI is not importable here (tests/test_in_comfy_venv.py runs this in ComfyUI's venv)")

    native = comfy_inproc.load_nodes_module("native_model")
    _, easycache = comfy_inproc.load_core("comfy_extras/nodes_easycache.py")
    return native, easycache


def _comfy_sample(native, model, texts, steps):
    import comfy.nested_tensor
    import comfy.samplers

    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    noise = comfy.nested_tensor.NestedTensor((v[None], a.T[None].contiguous()))
    positive = [[texts.positive[None], {}]]
    negative = [[texts.video_negative[None], {native.AUDIO_CONTEXT_KEY: texts.audio_negative[None]}]]
    guider = native.OviGuider(model, 4.0, 3.0)
    guider.set_conds(positive, negative, negative)
    latent = native.empty_av_latent(F, H, W, L)["samples"]
    out = guider.sample(noise, latent, native.ovi_sampler("unipc"), native.ovi_sigmas("unipc", steps),
                        seed=SEED, disable_pbar=True)
    return out.unbind()


@pytest.mark.parametrize("node", ["EasyCacheNode", "LazyCacheNode"])
def test_core_cache_nodes_skip_forwards_on_the_ovi_model(comfy_env, fusion, texts, monkeypatch, node):
    native, easycache = comfy_env
    steps = 20
    model = native.build_model_patcher(fusion, slg_layer=1)
    ref = _comfy_sample(native, model, texts, steps)

    counter = _Counter(monkeypatch)
    node_cls = getattr(easycache, node)
    zero = node_cls.execute(model, 0.0, 0.15, 0.95, False)[0]
    out = _comfy_sample(native, zero, texts, steps)
    assert all(torch.equal(o, r) for o, r in zip(out, ref)), f"{node} at threshold 0 changed the result"
    assert counter.calls == steps

    counter.calls = 0
    cached = node_cls.execute(model, CORE_THRESHOLD, 0.15, 0.95, False)[0]
    out = _comfy_sample(native, cached, texts, steps)
    rel = [((o - r).norm() / r.norm()).item() for o, r in zip(out, ref)]
    print(f"{node} threshold {CORE_THRESHOLD}, {steps} steps: {counter.calls} forwards; relative error video {rel[0]:.3g}, "
          f"audio {rel[1]:.3g}")
    assert counter.calls < steps
    assert all(torch.isfinite(o).all() for o in out) and max(rel) < 1.0
