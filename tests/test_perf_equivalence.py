"""The fast paths of the fused forward give the numbers of the general ones.

The forward folds the modulation into the LayerNorm when every row shares it, runs skip-layer rows as views when
they are consecutive, and updates the streams in place; each path must equal running the rows one at a time.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def case(golden_dir):
    return load_file(str(golden_dir / "forward_case_1.safetensors"))


def _rows_one_by_one(model, video, audio, t, ctx_v, ctx_a, skip, **kw):
    outs = [model(video[i : i + 1], audio[i : i + 1], t[i : i + 1], [ctx_v[i]], [ctx_a[i]],
                  slg_layer=kw.get("slg_layer", 0) if skip[i] else 0,
                  first_frame_is_clean=kw.get("first_frame_is_clean", False))
            for i in range(video.shape[0])]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


@pytest.mark.parametrize(
    "t,skip,i2v",
    [
        ([700, 700, 700], [False, True, False], False),  # same t (LayerNorm-folded modulation), SLG rows by index
        ([700, 300, 50], [True, True, False], False),  # per-row t (modulation in place), SLG rows as a slice
        ([700, 700, 700], [False, False, True], True),  # image-to-video: two token segments
    ],
)
def test_batched_forward_equals_rows_one_by_one(tiny_fusion, case, t, skip, i2v):
    gen = torch.Generator().manual_seed(3)
    v0, a0 = case["in.video_latent"], case["in.audio_latent"]  # [48, F, H, W], [L, 20]
    video = v0.expand(3, *v0.shape) + 0.3 * torch.randn(3, *v0.shape, generator=gen)
    audio = a0.expand(3, *a0.shape) + 0.3 * torch.randn(3, *a0.shape, generator=gen)
    ctx_v = [case["in.video_context"], case["in.video_context"][:5], case["in.audio_context"]]
    ctx_a = [case["in.audio_context"], case["in.video_context"], case["in.audio_context"][:3]]
    t = torch.tensor(t)
    kw = dict(slg_layer=1, first_frame_is_clean=i2v)
    text = tiny_fusion.prepare_text(ctx_v, ctx_a)
    got_v, got_a = tiny_fusion(video, audio, t, text=text, skip_mask=torch.tensor(skip), **kw)
    want_v, want_a = _rows_one_by_one(tiny_fusion, video, audio, t, ctx_v, ctx_a, skip, **kw)
    # float32 rounding only (a batch of 3 runs other matmul blockings than a batch of 1: measured <= 4e-6)
    torch.testing.assert_close(got_v, want_v, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_a, want_a, atol=1e-5, rtol=0)
    assert (got_v[0] - got_v[1]).abs().max() > 1e-2  # the rows really differ


def test_forward_leaves_its_inputs_and_the_text_cache_alone(tiny_fusion, case):
    video, audio = case["in.video_latent"].clone(), case["in.audio_latent"].clone()
    text = tiny_fusion.prepare_text([case["in.video_context"]] * 2, [case["in.audio_context"]] * 2)
    before = [(k.clone(), v.clone()) for k, v in text.video_kv + text.audio_kv]
    v2, a2 = video.expand(2, *video.shape), audio.expand(2, *audio.shape)
    first = tiny_fusion(v2, a2, torch.tensor([500, 500]), text=text, slg_layer=1, skip_mask=torch.tensor([False, True]))
    second = tiny_fusion(v2, a2, torch.tensor([500, 500]), text=text, slg_layer=1, skip_mask=torch.tensor([False, True]))
    assert torch.equal(video, case["in.video_latent"]) and torch.equal(audio, case["in.audio_latent"])
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(text.video_kv + text.audio_kv, before))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
