"""Hostile inputs to the nodes, called directly without ComfyUI: VALIDATE_INPUTS as ComfyUI calls it before a run,
and the node functions as ComfyUI calls them during one.

Each case asserts the kind of refusal (a VALIDATE_INPUTS message, or the OviError subclass raised), the message's key
words (what was given, what is allowed, what to do), that no raw Python exception type shows, and that the output
folder is left empty. The same inputs through a real ComfyUI server are in test_comfy_server.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import nodes
from nodes import bridge
from nodes.bridge import DEMO_ENTRY
from ovi_core.errors import OviError, OviInputError, WrongFileError
from ovi_core.outpaths import OutputPathError

M = nodes.NODE_CLASS_MAPPINGS
SIDE = 64
RAW_TYPES = ("TypeError", "ValueError", "OSError", "KeyError", "AttributeError", "IndexError", "RuntimeError",
             "Traceback")
MSG = "validate_inputs message"  # the refusal is a returned message (ComfyUI shows it under the input)


def run(node_id: str, **kwargs):
    out = M[node_id].execute(**kwargs)
    return tuple(out.args) if out.ui is None else {"ui": out.ui, "result": tuple(out.args)}


def validate(node_id: str, **kwargs):
    return M[node_id].validate_inputs(**kwargs)


@pytest.fixture(scope="module")
def demo():
    (model,) = run("OviModelLoader", model_name=DEMO_ENTRY, variant="auto", weight_dtype="auto", attention="sdpa",
                   memory_mode="all on GPU", swap_blocks=0)
    model.model.ovi_variant = dataclasses.replace(model.model.ovi_variant, video_latent_length=2, audio_latent_length=6)
    (te,) = run("OviTextEncoderLoader", text_encoder_name=DEMO_ENTRY, precision="auto")
    (vae,) = run("OviVideoVAELoader", vae_name=DEMO_ENTRY, precision="auto")
    (avae,) = run("OviAudioVAELoader", vae_name=DEMO_ENTRY, vocoder_name=DEMO_ENTRY)
    text, *_ = run("OviTextEncode", text_encoder=te, prompt="a cat <S>hi<E> <AUDCAP>a voice<ENDAUDCAP>",
                  video_negative="blur", audio_negative="echo", variant="720x720_5s")
    return dict(model=model, te=te, vae=vae, avae=avae, text=text)


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "output"
    folder.mkdir()
    bridge.set_fallback_output_dir(folder)
    yield folder
    bridge.set_fallback_output_dir(None)


@pytest.fixture
def model_dir(tmp_path):
    kinds = ("ovi", "diffusion_models", "text_encoders", "vae", "mmaudio")
    for kind in kinds:
        (tmp_path / kind).mkdir()
        bridge.set_fallback_folders(kind, [tmp_path / kind])
    yield tmp_path
    for kind in kinds:
        bridge.set_fallback_folders(kind, [])


def sample(d, **kw):
    args = dict(model=d["model"], text=d["text"], seed=1, steps=1, solver="euler", shift=5.0, video_guidance=4.0,
                audio_guidance=3.0, slg_layer=1, width=SIDE, height=SIDE)
    args.update(kw)
    return run("OviSampler", **args)


def mux(**kw):
    args = dict(images=torch.rand(3, 32, 32, 3), audio={"waveform": torch.zeros(1, 1, 2000), "sample_rate": 16000},
                fps=24.0, filename_prefix="Ovi/clip")
    args.update(kw)
    return run("OviMux", **args)


def vdecode(d, latent):
    return run("OviVideoDecode", video_vae=d["vae"], video_latent=latent, tiled=False, tile_size=512)


def adecode(d, latent, rate="16000"):
    return run("OviAudioDecode", audio_vae=d["avae"], audio_latent=latent, sample_rate=rate)


def cond(d, positive, **kw):
    return run("OviTextFromConditioning", positive=positive, **kw)


class NestedTensor:  # what ComfyUI's joint audio+video latents hold (comfy.nested_tensor.NestedTensor)
    def __init__(self, *tensors):
        self.tensors = list(tensors)
        self.is_nested = True

    def unbind(self):
        return self.tensors


def joint(video=(1, 48, 2, 4, 4), audio=(1, 20, 6), mask=None):
    latent = {"samples": NestedTensor(torch.zeros(video), torch.zeros(audio))}
    if mask is not None:
        latent["noise_mask"] = mask
    return latent


class NotOvi:  # a core MODEL of another model: ModelPatcher.model is a BaseModel whose diffusion_model is not Ovi's
    model = type("WAN22", (), {"diffusion_model": torch.nn.Linear(1, 1)})()


def size(w, h):
    return lambda d: validate("OviSampler", width=w, height=h)


def prefix(p):
    return lambda d: validate("OviMux", filename_prefix=p)


def rate(r):
    return lambda d: validate("OviAudioDecode", sample_rate=r)


def prompt(p):
    return lambda d: validate("OviTextEncode", prompt=p)


AUDIO = {"samples": torch.zeros(1, 20, 6), "type": "audio"}
VIDEO = {"samples": torch.zeros(1, 48, 2, 4, 4)}

# (id, call(demo), expected kind, key words)
CASES = [
    # ---- sampler sizes, before the run (VALIDATE_INPUTS: static bound, the largest variant's) ----
    ("size_4096x4096", size(4096, 4096), OviInputError, ["4096x4096", "too large", "2,073,600", "960x960"]),
    ("size_4096x4096_names_the_factor", size(4096, 4096), OviInputError, ["2.25x the trained"]),
    ("size_2048x1024", size(2048, 1024), OviInputError, ["2048x1024", "too large"]),
    ("size_1920x1920", size(1920, 1920), OviInputError, ["1920x1920", "at most 2,073,600 pixels"]),
    ("width_720", size(720, 704), OviInputError, ["width 720", "multiple of 32", "704 or 736"]),
    ("height_100", size(704, 100), OviInputError, ["height 100", "multiple of 32", "96 or 128"]),
    ("width_0", size(0, 64), OviInputError, ["width", "at least 32", "got 0"]),
    ("height_negative", size(64, -32), OviInputError, ["height", "at least 32", "got -32"]),
    ("width_fraction", size(64.5, 64), OviInputError, ["width", "whole number", "64.5"]),
    ("width_text", size("wide", 64), OviInputError, ["width", "whole number", "'wide'"]),
    ("width_bool", size(True, 64), OviInputError, ["width", "whole number", "True"]),
    ("width_huge", size(10**9, 32), OviInputError, ["too large"]),
    # ---- sampler at run time (the model's own bound, settings ComfyUI's min/max let through) ----
    ("run_height_100", lambda d: sample(d, height=100), OviInputError, ["height 100", "multiple of 32"]),
    ("run_over_the_demo_area", lambda d: sample(d, width=64, height=4096), OviInputError,
     ["64x4096", "too large", "at most 9,216 pixels"]),
    ("run_shift_nan", lambda d: sample(d, shift=math.nan), OviInputError, ["shift", "finite", "nan"]),
    ("run_video_guidance_inf", lambda d: sample(d, video_guidance=math.inf), OviInputError,
     ["video_guidance", "finite", "inf"]),
    ("run_audio_guidance_nan", lambda d: sample(d, audio_guidance=math.nan), OviInputError,
     ["audio_guidance", "finite"]),
    ("run_slg_layer_past_the_depth", lambda d: sample(d, slg_layer=11), OviInputError, ["slg_layer", "11"]),
    ("start_image_batch", lambda d: sample(d, start_image=torch.rand(3, 32, 32, 3), video_vae=d["vae"]),
     OviInputError, ["batch of 3 images", "ImageFromBatch"]),
    ("start_image_without_vae", lambda d: sample(d, start_image=torch.rand(1, 32, 32, 3)), OviInputError,
     ["needs a video_vae", "Ovi Video VAE Loader"]),
    ("start_image_5_channels", lambda d: sample(d, start_image=torch.rand(1, 32, 32, 5), video_vae=d["vae"]),
     OviInputError, ["5 channels", "RGB"]),
    ("start_image_not_an_image", lambda d: sample(d, start_image=[[0.5]], video_vae=d["vae"]), OviInputError,
     ["start_image must be an IMAGE", "list"]),
    ("start_image_flat", lambda d: sample(d, start_image=torch.rand(32, 3), video_vae=d["vae"]), OviInputError,
     ["start_image must be an IMAGE", "[32, 3]"]),
    ("start_image_empty", lambda d: sample(d, start_image=torch.rand(1, 0, 32, 3), video_vae=d["vae"]),
     OviInputError, ["start_image is empty"]),
    # ---- sampler: the model, text as CONDITIONING, the joint latent ----
    ("model_not_ovi", lambda d: sample(d, model=NotOvi()), OviInputError, ["WAN22", "not an Ovi model",
                                                                          "Ovi Model Loader"]),
    ("no_text_nor_positive", lambda d: sample(d, text=None), OviInputError, ["no text", "positive"]),
    ("positive_of_clip_l", lambda d: sample(d, text=None, positive=[[torch.zeros(1, 77, 768), {}]]), OviInputError,
     ["width 768", "CLIPLoader, type 'wan'"]),
    ("latent_not_joint", lambda d: sample(d, latent=VIDEO), OviInputError, ["joint audio+video LATENT",
                                                                            "Ovi Empty Latent"]),
    ("latent_batch_of_2", lambda d: sample(d, latent=joint((2, 48, 2, 4, 4), (2, 20, 6))), OviInputError,
     ["batch of 2", "one clip"]),
    ("latent_mask_keeps_the_audio", lambda d: sample(d, latent=joint(mask=NestedTensor(
        torch.ones(1, 1, 2, 4, 4), torch.zeros(1, 20, 6)))), OviInputError, ["noise_mask", "video latent frame 0",
                                                                              "Ovi Guider"]),
    ("latent_over_the_demo_area", lambda d: sample(d, latent=joint((1, 48, 2, 4, 256))), OviInputError,
     ["4096x64", "too large"]),
    ("latent_and_start_image", lambda d: sample(d, latent=joint(mask=NestedTensor(
        torch.cat([torch.zeros(1, 1, 1, 4, 4), torch.ones(1, 1, 1, 4, 4)], 2), torch.ones(1, 20, 6))),
        start_image=torch.rand(1, 32, 32, 3), video_vae=d["vae"]), OviInputError, ["both a start_image"]),
    # ---- text ----
    ("prompt_empty", prompt(""), MSG, ["prompt is empty", "<S>", "<AUDCAP>"]),
    ("prompt_blank", prompt("  \n\t "), MSG, ["prompt is empty"]),
    ("prompt_not_text", prompt(123), MSG, ["prompt is empty"]),
    ("run_prompt_empty", lambda d: run("OviTextEncode", text_encoder=d["te"], prompt="", video_negative="",
                                       audio_negative="", variant="720x720_5s"), OviInputError, ["prompt is empty"]),
    ("conditioning_clip_l", lambda d: cond(d, [[torch.zeros(1, 77, 768), {}]]), OviInputError,
     ["width 768", "4096", "CLIPLoader, type 'wan'"]),
    ("conditioning_t5_of_flux_width", lambda d: cond(d, [[torch.zeros(1, 256, 4096 + 1), {}]]), OviInputError,
     ["width 4097", "umT5-XXL"]),
    ("conditioning_not_a_list", lambda d: cond(d, torch.zeros(1, 10, 4096)), OviInputError,
     ["positive must be a CONDITIONING", "Tensor"]),
    ("conditioning_empty_list", lambda d: cond(d, []), OviInputError, ["positive must be a CONDITIONING",
                                                                       "empty list"]),
    ("conditioning_list_of_tensors", lambda d: cond(d, [torch.zeros(1, 5, 4096)]), OviInputError,
     ["list of Tensor", "[tensor, dict] pairs"]),
    ("conditioning_2d_states", lambda d: cond(d, [[torch.zeros(10, 4096), {}]]), OviInputError,
     ["positive has shape [10, 4096]", "CLIPTextEncode"]),
    ("negative_conditioning_clip_l", lambda d: cond(d, [[torch.zeros(1, 5, 4096), {}]],
                                                     video_negative=[[torch.zeros(1, 77, 768), {}]]),
     OviInputError, ["video_negative", "width 768"]),
    # ---- decoders: wrong latent kinds ----
    ("audio_latent_into_video_decode", lambda d: vdecode(d, AUDIO), OviInputError,
     ["got an audio latent", "video_latent output"]),
    ("image_latent_into_video_decode", lambda d: vdecode(d, {"samples": torch.zeros(1, 4, 8, 8)}), OviInputError,
     ["image latent", "48"]),
    ("wan21_latent_into_video_decode", lambda d: vdecode(d, {"samples": torch.zeros(1, 16, 2, 8, 8)}), OviInputError,
     ["16-channel", "Wan2.1"]),
    ("tensor_instead_of_latent", lambda d: vdecode(d, torch.zeros(1, 48, 2, 4, 4)), OviInputError,
     ["must be a LATENT", "Tensor"]),
    ("latent_without_samples", lambda d: vdecode(d, {"noise_mask": torch.zeros(1)}), OviInputError,
     ["not one tensor", "NoneType"]),
    ("joint_av_latent_into_video_decode", lambda d: vdecode(d, {"samples": NestedTensor(torch.zeros(1))}),
     OviInputError, ["NestedTensor", "not one tensor"]),
    ("video_latent_into_audio_decode", lambda d: adecode(d, VIDEO), OviInputError,
     ["got a video latent", "audio_latent output"]),
    ("stable_audio_latent", lambda d: adecode(d, {"samples": torch.zeros(1, 64, 10), "type": "audio"}),
     OviInputError, ["64-channel", "MMAudio"]),
    ("audio_latent_2d", lambda d: adecode(d, {"samples": torch.zeros(20, 6)}), OviInputError,
     ["has shape [20, 6]", "[batch, 20, length]"]),
    ("audio_latent_empty", lambda d: adecode(d, {"samples": torch.zeros(1, 20, 0)}), OviInputError,
     ["[1, 20, 0]", "length"]),
    ("run_sample_rate_unknown", lambda d: adecode(d, AUDIO, rate="12345"), OviInputError,
     ["sample_rate '12345'", "16000"]),
    ("sample_rate_12345", rate(12345), MSG, ["sample_rate 12345", "16000, 22050"]),
    ("sample_rate_text", rate("fast"), MSG, ["sample_rate 'fast'", "48000"]),
    ("sample_rate_bool", rate(True), MSG, ["sample_rate True"]),
    ("sample_rate_fraction", rate(16000.5), MSG, ["16000.5"]),
    # ---- the mux: prefix before the run ----
    ("prefix_empty", prefix(""), MSG, ["filename_prefix is empty", "Ovi/clip"]),
    ("prefix_blank", prefix("   "), MSG, ["filename_prefix is empty"]),
    ("prefix_nul", prefix("Ovi/bad\x00name"), MSG, ["control character", "'\\x00'"]),
    ("prefix_newline", prefix("Ovi/two\nlines"), MSG, ["control character", "'\\n'"]),
    ("prefix_hidden_file", prefix(".hidden"), MSG, ["starts with a dot", "hidden file", "drop the dot"]),
    ("prefix_hidden_folder", prefix("Ovi/.cache/clip"), MSG, ["'.cache'", "hidden folder"]),
    ("prefix_300_characters", prefix("a" * 300), MSG, ["300 bytes", "255", "shorten it to at most"]),
    ("prefix_260_bytes_of_accents", prefix("é" * 130), MSG, ["260 bytes", "shorten"]),
    ("prefix_long_folder", prefix("f" * 256 + "/clip"), MSG, ["256 bytes", "255"]),
    ("prefix_dotdot", prefix("../escape"), MSG, ["inside the output folder", "'..'"]),
    ("prefix_dotdot_inside", prefix("Ovi/../../escape"), MSG, ["inside the output folder"]),
    ("prefix_absolute", prefix("/tmp/ovi_clip"), MSG, ["absolute path", "output folder"]),
    ("prefix_windows_drive", prefix("C:\\clips\\ovi"), MSG, ["absolute path"]),
    ("prefix_trailing_slash", prefix("Ovi/"), MSG, ["ends with a folder separator", "file name"]),
    ("prefix_not_text", prefix(42), MSG, ["filename_prefix must be text", "int"]),
    # ---- the mux at run time ----
    ("run_prefix_nul", lambda d: mux(filename_prefix="x\x00y"), OutputPathError, ["control character"]),
    ("run_prefix_empty", lambda d: mux(filename_prefix=""), OutputPathError, ["empty"]),
    ("run_fps_nan", lambda d: mux(fps=math.nan), OviInputError, ["fps", "1 to 120", "nan"]),
    ("run_fps_inf", lambda d: mux(fps=math.inf), OviInputError, ["fps", "inf"]),
    ("run_fps_0", lambda d: mux(fps=0.0), OviInputError, ["fps", "got 0.0"]),
    ("run_fps_negative", lambda d: mux(fps=-24.0), OviInputError, ["fps", "-24.0"]),
    ("run_fps_text", lambda d: mux(fps="24"), OviInputError, ["fps", "'24'"]),
    ("run_images_3d", lambda d: mux(images=torch.rand(32, 32, 3)), OviInputError, ["IMAGE batch", "[32, 32, 3]"]),
    ("run_images_not_tensor", lambda d: mux(images="frames"), OviInputError, ["IMAGE batch", "str"]),
    ("run_audio_batch", lambda d: mux(audio={"waveform": torch.zeros(2, 1, 800), "sample_rate": 16000}),
     OviInputError, ["batch of 2 sounds", "AudioConcat"]),
    ("run_audio_3_channels", lambda d: mux(audio={"waveform": torch.zeros(1, 3, 800), "sample_rate": 16000}),
     OviInputError, ["1 or 2 channels", "[1, 3, 800]"]),
    ("run_audio_rate_0", lambda d: mux(audio={"waveform": torch.zeros(1, 1, 800), "sample_rate": 0}),
     OviInputError, ["sample_rate", "positive whole number", "got 0"]),
    ("run_audio_rate_nan", lambda d: mux(audio={"waveform": torch.zeros(1, 1, 800), "sample_rate": math.nan}),
     OviInputError, ["sample_rate", "got nan"]),
    ("run_audio_not_audio", lambda d: mux(audio=torch.zeros(1, 1, 800)), OviInputError, ["must be an AUDIO"]),
    # ---- loaders ----
    ("audio_vae_demo_with_file_vocoder", lambda d: run("OviAudioVAELoader", vae_name=DEMO_ENTRY,
                                                       vocoder_name="(inside the VAE file)"),
     OviInputError, ["for both", "vocoder"]),
]
FILE_CASES = [
    ("model_file_gone", lambda: run("OviModelLoader", model_name="gone.safetensors", variant="auto",
                                    weight_dtype="auto", attention="sdpa", memory_mode="all on GPU", swap_blocks=0),
     WrongFileError, ["gone.safetensors", "not found", "models/ovi"]),
    ("text_encoder_file_gone", lambda: run("OviTextEncoderLoader", text_encoder_name="gone.safetensors",
                                           precision="auto"), WrongFileError, ["gone.safetensors", "not found"]),
    ("video_vae_file_gone", lambda: run("OviVideoVAELoader", vae_name="gone.pth", precision="auto"), WrongFileError,
     ["gone.pth", "models/vae"]),
    ("audio_vae_file_gone", lambda: run("OviAudioVAELoader", vae_name="gone.pth", vocoder_name="gone2.pt"),
     WrongFileError, ["not found", "models/mmaudio"]),
]

GARBAGE = b"<html>404 Not Found</html>" * 40  # what a failed download often leaves
FILE_CASES += [
    ("model_file_not_weights", lambda: run("OviModelLoader", model_name="model.safetensors", variant="auto",
                                           weight_dtype="auto", attention="sdpa", memory_mode="all on GPU",
                                           swap_blocks=0), WrongFileError, ["model.safetensors", "not a safetensors"]),
    ("text_encoder_file_not_weights", lambda: run("OviTextEncoderLoader", text_encoder_name="umt5_xxl_fp16.safetensors",
                                                  precision="auto"), WrongFileError,
     ["umt5_xxl_fp16.safetensors", "not a safetensors"]),
    ("video_vae_file_not_weights", lambda: run("OviVideoVAELoader", vae_name="Wan2.2_VAE.pth", precision="auto"),
     WrongFileError, ["Wan2.2_VAE.pth", "not a weights file", "download it again"]),
    ("audio_vae_file_not_weights", lambda: run("OviAudioVAELoader", vae_name="v1-16.pth", vocoder_name="best_netG.pt"),
     WrongFileError, ["v1-16.pth", "download it again"]),
]


def _check(outcome, kind, words):
    if kind == MSG:
        assert isinstance(outcome, str), f"expected a VALIDATE_INPUTS message, got {outcome!r}"
        text = outcome
    else:
        assert isinstance(outcome, kind), f"expected {kind.__name__}, got {type(outcome).__name__}: {outcome}"
        text = str(outcome)
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in {text!r}"
    assert not any(raw in text for raw in RAW_TYPES), text


def _outcome(call):
    try:
        return call()
    except OviError as exc:
        return exc


@pytest.mark.parametrize("name, call, kind, words", CASES, ids=[c[0] for c in CASES])
def test_hostile_node_input(demo, out_dir, name, call, kind, words):
    _check(_outcome(lambda: call(demo)), kind, words)
    assert [p for p in out_dir.rglob("*")] == []


@pytest.mark.parametrize("name, call, kind, words", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_loader_file(model_dir, out_dir, name, call, kind, words):
    for kind_dir, file in (("ovi", "model.safetensors"), ("text_encoders", "umt5_xxl_fp16.safetensors"),
                           ("vae", "Wan2.2_VAE.pth"), ("mmaudio", "v1-16.pth"), ("mmaudio", "best_netG.pt")):
        (model_dir / kind_dir / file).write_bytes(GARBAGE)
    _check(_outcome(call), kind, words)
    assert [p for p in out_dir.rglob("*")] == []


def test_the_table_covers_every_class_of_input():
    ids = [c[0] for c in CASES + FILE_CASES]
    assert len(ids) >= 50 and len(set(ids)) == len(ids)


# ---- what must pass --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: validate("OviSampler", width=704, height=704),
    lambda: validate("OviSampler", width=1920, height=1056),  # 2.25x the 960 area, a 16:9-ish clip
    lambda: validate("OviSampler", width=None, height=4096),  # linked: checked when it runs
    lambda: validate("OviSampler"),  # missing: ComfyUI says "Required input is missing"
    lambda: validate("OviTextEncode"),
    lambda: validate("OviTextEncode", prompt=None),
    lambda: validate("OviMux"),
    lambda: validate("OviMux", filename_prefix="Ovi/sub folder/clip-1_é"),
    lambda: validate("OviAudioDecode"),
    lambda: validate("OviAudioDecode", sample_rate="16000"),
    lambda: validate("OviAudioDecode", sample_rate=16000),
    lambda: validate("OviAudioDecode", sample_rate=44100.0),
], ids=["704", "1920x1056", "linked", "sampler_missing", "text_missing", "text_linked", "mux_missing", "mux_folders",
        "rate_missing", "rate_text", "rate_int", "rate_float"])
def test_good_or_missing_inputs_pass_validation(call):
    assert call() is True


def test_sample_rate_as_a_number_decodes_like_the_text(demo):
    (as_text,) = adecode(demo, AUDIO, rate="24000")
    (as_int,) = adecode(demo, AUDIO, rate=24000)
    assert as_int["sample_rate"] == as_text["sample_rate"] == 24000
    assert torch.equal(as_int["waveform"], as_text["waveform"])


def test_mux_into_a_subfolder_that_is_a_file_says_so(out_dir):
    (out_dir / "Ovi").write_bytes(b"in the way")
    with pytest.raises(OutputPathError, match=r"cannot write the mp4 for filename_prefix 'Ovi/clip'.*writable folders"):
        mux()
    assert sorted(p.name for p in out_dir.rglob("*")) == ["Ovi"]


def test_mux_with_a_refused_prefix_writes_nothing_and_a_good_one_keeps_comfys_counter(out_dir):
    with pytest.raises(OutputPathError):
        mux(filename_prefix=".hidden")
    assert list(out_dir.rglob("*")) == []
    first, second = mux()["ui"]["images"][0], mux()["ui"]["images"][0]
    assert (first["filename"], second["filename"]) == ("clip_00001_.mp4", "clip_00002_.mp4")
    assert sorted(p.name for p in out_dir.rglob("*") if p.is_file()) == ["clip_00001_.mp4", "clip_00002_.mp4"]
