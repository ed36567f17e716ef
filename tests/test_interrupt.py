"""Stopping long work on request (ovi_core.interrupt): every long operation stops at its next check, raises
OviInterrupted (or the checker's own exception, unchanged), and the next call gives the numbers of a fresh one."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from ovi_core import interrupt
from ovi_core.config import FusionConfig
from ovi_core.demo import build_demo_audio_decoder, build_demo_fusion, build_demo_text_encoder, build_demo_video_vae
from ovi_core.errors import OviInterrupted
from ovi_core.fusion import OviFusion
from ovi_core.sampler import PromptEmbeddings, sample_joint
from ovi_core.text_encoder import OviTextEncoder, load_umt5_encoder
from ovi_core.weights import load_fusion_model, save_fusion_checkpoint


class Cancelled(Exception):
    """Stands in for a front end's own exception (ComfyUI raises InterruptProcessingException)."""


class StopAfter:
    """A checker that lets `k` checks pass and then asks to stop: returns True, or raises `exc` when given."""

    def __init__(self, k: int, exc: BaseException | None = None):
        self.k, self.exc, self.calls = k, exc, 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls <= self.k:
            return False
        if self.exc is not None:
            raise self.exc
        return True


class StopWhenSet:
    """A checker that asks to stop (returns True, or raises `exc`) once `set()` was called (from a hook or a
    callback)."""

    def __init__(self, exc: BaseException | None = None):
        self.flag, self.exc = False, exc

    def set(self, *_args) -> None:
        self.flag = True

    def __call__(self) -> bool:
        if self.flag and self.exc is not None:
            raise self.exc
        return self.flag


@pytest.fixture(autouse=True)
def no_checker_left_behind():
    before = list(interrupt._checkers)
    yield
    assert interrupt._checkers == before, "a test left a checker installed"


def _count_calls(modules) -> list[int]:
    """Forward hooks that append each module's index when it has run; returns the (shared) list."""
    ran: list[int] = []
    for i, m in enumerate(modules):
        m.register_forward_hook(lambda *_args, i=i: ran.append(i))
    return ran


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


# ---- the checkers themselves ---------------------------------------------------------------------------------------
def test_check_raises_only_while_a_checker_asks_and_names_the_place():
    interrupt.check("nothing installed")  # no checker: nothing happens
    stop = StopWhenSet()
    with interrupt.checking(stop):
        interrupt.check("x")
        stop.set()
        with pytest.raises(OviInterrupted, match="during decoding the video"):
            interrupt.check("decoding the video")
    interrupt.check("removed again")
    with interrupt.checking(StopAfter(0, Cancelled("mine"))), pytest.raises(Cancelled, match="mine"):
        interrupt.check("x")


# ---- the fused transformer -----------------------------------------------------------------------------------------
def _fusion_inputs(model: OviFusion):
    g = torch.Generator().manual_seed(3)
    video, audio = torch.randn(1, 48, 2, 4, 4, generator=g), torch.randn(1, 8, 20, generator=g)
    ctx = [torch.randn(5, 4096, generator=g)], [torch.randn(4, 4096, generator=g)]
    return video, audio, torch.tensor([700]), ctx


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("swap", [False, True])
def test_fused_forward_stops_between_blocks_and_the_model_stays_usable(k, swap):
    # block swap "to cpu:0 and back to cpu": the same memory, but the two devices compare unequal, so the last move
    # of every swapped block shows where it was left
    def build():
        model = build_demo_fusion()
        if swap:
            model.enable_block_swap(2, "cpu:0", "cpu")
            model.ffn_chunk = 5
        return model

    def record_moves(block):
        to = block.to

        def recorded(device):
            last_move[block] = torch.device(device)
            return to(device)

        block.to = recorded

    model, last_move = build(), {}
    for tower in (model.video_model, model.audio_model) if swap else ():
        for block in tower.blocks[:2]:
            record_moves(block)
    video, audio, t, ctx = _fusion_inputs(model)
    text = model.prepare_text(*ctx)
    ran = _count_calls([b.self_attn for b in model.video_model.blocks])
    with interrupt.checking(StopAfter(k)), pytest.raises(OviInterrupted, match="transformer forward"):
        model(video, audio, t, text=text)
    assert ran == list(range(k))  # exactly the blocks before the stop ran
    if swap:
        assert model._swap == (2, torch.device("cpu:0"), torch.device("cpu"))
        assert len(last_move) == (4 if k == 2 else 0)
        assert all(device == torch.device("cpu") for device in last_move.values())  # back on the offload device

    again = model(video, audio, t, text=text, slg_layer=1)
    fresh = build()
    assert _same(again, fresh(video, audio, t, text=fresh.prepare_text(*ctx), slg_layer=1))


def test_fused_forward_passes_the_checkers_own_exception_through():
    model = build_demo_fusion()
    video, audio, t, ctx = _fusion_inputs(model)
    text = model.prepare_text(*ctx)
    error = Cancelled("cancel button")
    with interrupt.checking(StopAfter(1, error)), pytest.raises(Cancelled) as caught:
        model(video, audio, t, text=text)
    assert caught.value is error


def test_text_key_value_precompute_stops_per_block():
    model = build_demo_fusion()
    _, _, _, ctx = _fusion_inputs(model)
    stop = StopAfter(4)  # 3 blocks per tower: the video tower and one audio block
    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="text keys/values"):
        model.prepare_text(*ctx)
    assert stop.calls == 5
    assert _same(model.prepare_text(*ctx).audio_kv, build_demo_fusion().prepare_text(*ctx).audio_kv)


def test_full_size_forward_on_the_meta_device_stops_between_blocks():
    with torch.device("meta"):
        model = OviFusion(FusionConfig.full())
    video = torch.empty(1, 48, 31, 44, 44, device="meta")
    audio = torch.empty(1, 157, 20, device="meta")
    ctx = torch.empty(1, 40, 4096, device="meta")
    text = model.prepare_text(ctx, ctx)
    ran = _count_calls([b.self_attn for b in model.video_model.blocks])
    with interrupt.checking(StopAfter(5)), pytest.raises(OviInterrupted):
        model(video, audio, torch.tensor([999]), text=text)
    assert ran == [0, 1, 2, 3, 4]


# ---- the sampler ---------------------------------------------------------------------------------------------------
def _prompts() -> PromptEmbeddings:
    g = torch.Generator().manual_seed(5)
    return PromptEmbeddings(*(torch.randn(n, 4096, generator=g) for n in (6, 3, 4)))


def _sample(model, **kw):
    return sample_joint(model, _prompts(), video_shape=(48, 3, 4, 4), audio_shape=(12, 20), seed=7, steps=6,
                        slg_layer=1, **kw)


@pytest.mark.parametrize("exc", [None, Cancelled("stop")])
def test_sampling_stops_after_the_step_that_asked_and_the_next_run_is_unchanged(exc):
    model = build_demo_fusion()
    stop, done = StopWhenSet(exc), []

    def callback(step, total, latents):
        done.append(step)
        if step == 2:
            stop.set()

    with interrupt.checking(stop), pytest.raises(type(exc) if exc else OviInterrupted):
        _sample(model, callback=callback)
    assert done == [1, 2]  # the check before step 3 (or inside its forward) stopped it
    assert _same(_sample(model), _sample(build_demo_fusion()))


def test_sampling_stops_inside_a_step():
    model = build_demo_fusion()
    stop, steps = StopWhenSet(), []
    model.video_model.blocks[1].self_attn.register_forward_hook(stop.set)  # mid-way through the first forward
    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="transformer forward"):
        _sample(model, callback=lambda step, *_: steps.append(step))
    assert steps == []


# ---- the video VAE -------------------------------------------------------------------------------------------------
def _latent() -> torch.Tensor:
    return torch.randn(1, 48, 3, 4, 6, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("tile", [None, (4, 4)])
def test_video_decode_stops_at_the_next_frame_or_tile(tile):
    vae = build_demo_video_vae()
    latent = _latent()
    stop, progress = StopWhenSet(), []

    def on_progress(done, total):
        progress.append(done)
        stop.set()  # ask after the first decoded piece

    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="decoding the video"):
        vae.decode(latent, tile=tile, tile_overlap=2, progress=on_progress)
    assert progress == [1]
    assert _same(vae.decode(latent, tile=tile, tile_overlap=2),
                 build_demo_video_vae().decode(latent, tile=tile, tile_overlap=2))


def test_video_decode_stops_inside_a_frame_and_before_any_work():
    vae = build_demo_video_vae()
    ran = _count_calls(vae.decoder.upsamples)
    with interrupt.checking(StopAfter(0)), pytest.raises(OviInterrupted):
        vae.decode(_latent())
    assert ran == []
    stop = StopWhenSet()
    vae.decoder.upsamples[1].register_forward_hook(stop.set)
    with interrupt.checking(stop), pytest.raises(OviInterrupted):
        vae.decode(_latent())
    assert ran == [0, 1]  # the first frame's upsampler stopped after its second stage


def test_video_encode_stops_between_chunks():
    vae = build_demo_video_vae()
    frames = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1  # chunks: 1 + 4 + 4
    stop = StopWhenSet()
    ran = _count_calls([vae.encoder])
    vae.encoder.register_forward_hook(stop.set)
    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="encoding the image"):
        vae.encode(frames)
    assert len(ran) == 1
    assert _same(vae.encode(frames), build_demo_video_vae().encode(frames))


# ---- the audio VAE and the vocoder ---------------------------------------------------------------------------------
def test_audio_decode_stops_per_vae_level_and_per_vocoder_stage():
    dec = build_demo_audio_decoder()
    latent = torch.randn(1, 20, 10, generator=torch.Generator().manual_seed(6))
    levels = _count_calls([dec.vae.decoder.up[i].block[0] for i in range(len(dec.vae.decoder.up))])
    stages = _count_calls([up[0] for up in dec.vocoder.ups])
    n_levels, n_stages = len(dec.vae.decoder.up), len(dec.vocoder.ups)
    assert n_levels >= 2 and n_stages >= 2

    with interrupt.checking(StopAfter(1)), pytest.raises(OviInterrupted, match="decoding the audio"):
        dec.decode(latent)
    assert (len(levels), len(stages)) == (1, 0)
    levels.clear()
    with interrupt.checking(StopAfter(n_levels + 1)), pytest.raises(OviInterrupted, match="vocoder"):
        dec.decode(latent)
    assert (len(levels), len(stages)) == (n_levels, 1)
    assert _same(dec.decode(latent), build_demo_audio_decoder().decode(latent))


# ---- the text encoder ----------------------------------------------------------------------------------------------
PROMPTS = ["a cat plays the piano", "blur", "echo"]


def test_text_encoder_stops_between_layers_and_hooks_are_added_once():
    enc = build_demo_text_encoder()
    blocks = enc.model.encoder.block
    OviTextEncoder.from_transformers(enc.model, enc.tokenizer)  # wrapping again adds no second hook
    assert [len(b._forward_pre_hooks) for b in blocks] == [1] * len(blocks)
    ran = _count_calls(blocks)
    error = Cancelled("x")
    with interrupt.checking(StopAfter(1, error)), pytest.raises(Cancelled) as caught:
        enc.encode(PROMPTS)
    assert caught.value is error and ran == [0]
    assert _same(enc.encode(PROMPTS), build_demo_text_encoder().encode(PROMPTS))


def _encoder_file(tmp_path, fp8: bool):
    """The demo encoder as a ComfyUI-layout file; fp8: Linear weights as scaled float8 (old ComfyUI layout)."""
    sd = {k: v.clone().contiguous() for k, v in build_demo_text_encoder().model.state_dict().items()
          if k != "encoder.embed_tokens.weight"}
    if fp8:
        for k in [k for k in sd if k.startswith("encoder.block.") and sd[k].dim() == 2 and "relative" not in k]:
            scale = sd[k].abs().max() / 448.0
            sd[k] = (sd[k] / scale).to(torch.float8_e4m3fn)
            sd[k.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
        sd["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / ("umt5_fp8.safetensors" if fp8 else "umt5.safetensors")
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("keep_fp8", [True, False])
def test_text_encoder_loading_and_fp8_encoding_stop(tmp_path, keep_fp8):
    path = _encoder_file(tmp_path, fp8=True)
    stop = StopAfter(3)
    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="loading the text encoder"):
        load_umt5_encoder(path, dtype=torch.float32, keep_fp8=keep_fp8)
    assert stop.calls == 4  # one check per tensor

    model, _ = load_umt5_encoder(path, dtype=torch.float32, keep_fp8=keep_fp8)
    enc = OviTextEncoder(model, build_demo_text_encoder().tokenizer)
    ran = _count_calls(model.encoder.block)
    with interrupt.checking(StopAfter(1)), pytest.raises(OviInterrupted, match="encoding the prompt"):
        enc.encode(PROMPTS)
    assert ran == [0]
    fresh = OviTextEncoder(load_umt5_encoder(path, dtype=torch.float32, keep_fp8=keep_fp8)[0], enc.tokenizer)
    assert _same(enc.encode(PROMPTS), fresh.encode(PROMPTS))


# ---- weight loading ------------------------------------------------------------------------------------------------
def test_fusion_loading_stops_per_tensor_and_a_later_load_is_complete(tmp_path):
    path = tmp_path / "model.safetensors"
    save_fusion_checkpoint(build_demo_fusion(), path)
    stop = StopAfter(10)
    with interrupt.checking(stop), pytest.raises(OviInterrupted, match="loading the model weights"):
        load_fusion_model(path, dtype=torch.float32, variant="720x720_5s")
    assert stop.calls == 11
    model, _ = load_fusion_model(path, dtype=torch.float32, variant="720x720_5s")
    assert _same(list(model.state_dict().values()), list(build_demo_fusion().state_dict().values()))


# ---- the stop latency ----------------------------------------------------------------------------------------------
def test_a_long_demo_sampling_run_stops_within_two_seconds_of_the_request():
    model = build_demo_fusion()
    _sample(model)  # first use imports the schedulers' library (~1.5 s, not interruptible): not part of the timing
    asked = threading.Event()
    when: list[float] = []

    def ask():
        when.append(time.monotonic())
        asked.set()

    timer = threading.Timer(1.0, ask)
    steps: list[int] = []
    with interrupt.checking(asked.is_set):
        timer.start()
        try:
            with pytest.raises(OviInterrupted):  # 1000 steps take ~10 s on an idle core
                sample_joint(model, _prompts(), video_shape=(48, 31, 4, 4), audio_shape=(157, 20), seed=1,
                             steps=1000, slg_layer=1, callback=lambda step, *_: steps.append(step))
            stopped = time.monotonic()
        finally:
            timer.cancel()
    assert when, "the run finished before the stop was asked"
    assert 0 < len(steps) < 1000
    assert stopped - when[0] < 2.0
