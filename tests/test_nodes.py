"""The ComfyUI node classes (V3 schema; the pack's stand-in for comfy_api here), called directly (no ComfyUI
installed) on the built-in tiny demo models and on small checkpoint files written by the tests."""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import nodes
from nodes import bridge
from nodes.bridge import DEMO_ENTRY
from nodes.convert import video_latent_from_comfy, video_latent_to_comfy
from ovi_core.errors import OviInputError, WrongFileError

ROOT = Path(__file__).resolve().parent.parent
M = nodes.NODE_CLASS_MAPPINGS
PROMPT = "A cat on a sofa says <S>hello there<E> and yawns. Audio: a soft female voice, a quiet room."
SIDE = 64  # the demo variant's size
FRAMES_LAT, AUDIO_LAT = 3, 11
FRAMES, SAMPLES = 1 + 4 * (FRAMES_LAT - 1), 512 * AUDIO_LAT


def run(node_id: str, **kwargs):
    """Call a V3 node the way ComfyUI does: its execute classmethod with keyword inputs, the hidden inputs (prompt,
    extra_pnginfo) on the class. Returns the outputs tuple, or {"ui", "result"} when the node shows something."""
    cls = M[node_id]
    hidden = {k: kwargs.pop(k) for k in cls.INPUT_TYPES().get("hidden", {}) if k in kwargs}
    if hidden:
        cls = type(cls.__name__, (cls,), {"hidden": SimpleNamespace(**hidden)})
    out = cls.execute(**kwargs)
    return tuple(out.args) if out.ui is None else {"ui": out.ui, "result": tuple(out.args)}


def sample_all(model, text, seed=1, steps=3, slg_layer=1, width=SIDE, height=SIDE, **kw):
    """Ovi Sampler's three outputs: video LATENT, audio LATENT, joint LATENT."""
    return run("OviSampler", model=model, text=text, seed=seed, steps=steps, solver="unipc", shift=5.0,
               video_guidance=4.0, audio_guidance=3.0, slg_layer=slg_layer, width=width, height=height, **kw)


def sample(model, text, **kw):
    """The video and audio LATENTs."""
    return sample_all(model, text, **kw)[:2]



def short(model):
    """The demo model with a 3-latent-frame clip (9 frames, 11 audio latents) instead of 31/157: same code, less
    time. The shipped demo workflow (tests/test_workflows.py) runs the full-length clip."""
    inner = model.model
    inner.ovi_variant = dataclasses.replace(inner.ovi_variant, video_latent_length=FRAMES_LAT,
                                            audio_latent_length=AUDIO_LAT)
    return model


@pytest.fixture(scope="module")
def demo():
    """The four demo handles, loaded once through the loader nodes."""
    (model,) = run("OviModelLoader", model_name=DEMO_ENTRY, variant="auto", weight_dtype="auto", attention="sdpa",
                   memory_mode="all on GPU", swap_blocks=0)
    short(model)
    (te,) = run("OviTextEncoderLoader", text_encoder_name=DEMO_ENTRY, precision="auto")
    (vae,) = run("OviVideoVAELoader", vae_name=DEMO_ENTRY, precision="auto")
    (avae,) = run("OviAudioVAELoader", vae_name=DEMO_ENTRY, vocoder_name=DEMO_ENTRY)
    text, *_ = run("OviTextEncode", text_encoder=te, prompt=PROMPT, video_negative="blur", audio_negative="echo",
                  variant="720x720_5s")
    return dict(model=model, te=te, vae=vae, avae=avae, text=text)


@pytest.fixture
def out_dir(tmp_path):
    bridge.set_fallback_output_dir(tmp_path)
    yield tmp_path
    bridge.set_fallback_output_dir(None)


@pytest.fixture
def model_dir(tmp_path):
    folders = {kind: tmp_path / kind for kind in ("ovi", "diffusion_models", "text_encoders", "vae", "mmaudio")}
    for kind, folder in folders.items():
        folder.mkdir()
        bridge.set_fallback_folders(kind, [folder])
    yield folders
    for kind in folders:
        bridge.set_fallback_folders(kind, [])


# ---- definitions -------------------------------------------------------------------------------------------------
def _all_inputs(cls):
    it = cls.INPUT_TYPES()
    return {**it.get("required", {}), **it.get("optional", {})}


def test_every_node_is_an_ovi_node_with_tooltips_and_a_description():
    assert set(M) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert len(M) == 10
    for node_id, cls in M.items():
        assert node_id.startswith("Ovi"), node_id
        assert cls.CATEGORY.startswith("Ovi/"), node_id
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20, node_id
        assert issubclass(cls, bridge.io.ComfyNode) and "define_schema" in vars(cls) and "execute" in vars(cls)
        assert cls.define_schema().node_id == node_id
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS), node_id
        assert all(cls.OUTPUT_TOOLTIPS), node_id
        for name, spec in _all_inputs(cls).items():
            assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
            if spec[0] == "COMBO":
                options = spec[1]["options"]
                assert spec[1].get("default", options[0]) in options, f"{node_id}.{name}: default not an option"


def test_loaders_always_offer_the_demo_entry_and_list_files_of_their_folders(model_dir):
    (model_dir["ovi"] / "model.safetensors").write_bytes(b"x")
    (model_dir["diffusion_models"] / "sub").mkdir()
    (model_dir["diffusion_models"] / "sub" / "model_960x960.safetensors").write_bytes(b"x")
    (model_dir["ovi"] / "notes.txt").write_text("not a model")
    options = _all_inputs(M["OviModelLoader"])["model_name"][1]["options"]
    assert options == ["model.safetensors", "sub/model_960x960.safetensors", DEMO_ENTRY]
    for node_id in ("OviTextEncoderLoader", "OviVideoVAELoader", "OviAudioVAELoader"):
        assert _all_inputs(M[node_id])[next(iter(_all_inputs(M[node_id])))][1]["options"][-1] == DEMO_ENTRY


# Modules that exist only inside ComfyUI (they build on its model classes): they may import ComfyUI at the top, and
# the pack imports them only inside functions, when ComfyUI is there. Everything else talks to ComfyUI through the
# bridge.
COMFY_ONLY_MODULES = {"native_model.py", "native_nodes.py", "av_nodes.py"}


def test_comfy_imports_live_only_in_the_bridge():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|comfy_extras|folder_paths|latent_preview|server)\b",
                         re.M)
    files = [p for p in (ROOT / "nodes").glob("*.py") if p.name != "bridge.py"]
    offenders = [p.name for p in files if p.name not in COMFY_ONLY_MODULES and pattern.search(p.read_text())]
    assert offenders == [] and not pattern.search((ROOT / "__init__.py").read_text())
    loaded_by_the_pack = "\n".join(p.read_text() for p in files if p.name not in COMFY_ONLY_MODULES)
    for name in COMFY_ONLY_MODULES:  # no import at a module's top level
        assert not re.search(rf"^(from|import)\s[^\n]*\b{name[:-3]}\b", loaded_by_the_pack, re.M), \
            f"the pack imports the ComfyUI-only {name} when it loads"


def test_the_pack_imports_without_comfyui_as_comfyui_imports_it():
    """ComfyUI imports the folder as a package named after it; ovi_core must then resolve from the folder."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-Ovi', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ComfyUI-Ovi'] = m; spec.loader.exec_module(m)\n"
        "assert len(m.NODE_LIST) == 10 and not hasattr(m, 'NODE_CLASS_MAPPINGS'), dir(m)\n"
        "import asyncio\n"
        "ext = asyncio.run(m.comfy_entrypoint())\n"
        "assert asyncio.run(ext.get_node_list()) == m.NODE_LIST\n"
        "assert sys.modules['ovi_core'].__file__.startswith(" + repr(str(ROOT)) + ")\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths')]\n"
        "assert not bad, bad\n"
        "assert 'nodes' not in sys.modules, 'the pack must not shadow ComfyUI''s top-level nodes module'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the demo chain ----------------------------------------------------------------------------------------------
def test_demo_chain_text_to_mp4(demo, out_dir, monkeypatch):
    import nodes.output

    written = []
    write_mp4 = nodes.output.write_mp4
    monkeypatch.setattr(nodes.output, "write_mp4", lambda *a, **k: written.append(k["metadata"]) or write_mp4(*a, **k))
    video_latent, audio_latent = sample(demo["model"], demo["text"], steps=2)
    # standard LATENTs: Wan2.2 layout (raw VAE space) and the audio latent channels-first
    assert list(video_latent["samples"].shape) == [1, 48, FRAMES_LAT, SIDE // 16, SIDE // 16]
    assert list(audio_latent["samples"].shape) == [1, 20, AUDIO_LAT] and audio_latent["type"] == "audio"
    (frames,) = run("OviVideoDecode", video_vae=demo["vae"], video_latent=video_latent, tiled=False, tile_size=512)
    assert list(frames.shape) == [FRAMES, SIDE, SIDE, 3] and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.std() > 0.01
    (audio,) = run("OviAudioDecode", audio_vae=demo["avae"], audio_latent=audio_latent, sample_rate="16000")
    assert audio["sample_rate"] == 16000 and list(audio["waveform"].shape) == [1, 1, SAMPLES]
    result = run("OviMux", images=frames, audio=audio, fps=24.0, filename_prefix="Ovi/demo",
                 prompt={"1": {"class_type": "OviSampler"}}, extra_pnginfo={"workflow": {"nodes": []}})
    (item,) = result["ui"]["images"]
    assert item == {"filename": "demo_00001_.mp4", "subfolder": "Ovi", "type": "output"}
    assert written == [{"prompt": '{"1": {"class_type": "OviSampler"}}', "workflow": '{"nodes": []}'}]  # hidden inputs
    assert result["ui"]["animated"] == (True,)
    from ovi_core.mux import probe_mp4

    info = probe_mp4(out_dir / "Ovi" / item["filename"])
    assert (info.video_streams, info.audio_streams, info.video_codec, info.audio_codec, info.pix_fmt) == (
        1, 1, "h264", "aac", "yuv420p")
    assert info.num_frames == FRAMES and abs(info.audio_duration - FRAMES / 24) < 0.03
    # the VIDEO output carries the frames and the sound as written: padded with silence to FRAMES / 24 s
    (video,) = result["result"]
    assert torch.equal(video.images, frames)
    assert video.audio["waveform"].shape[-1] == round(FRAMES * 16000 / 24) > SAMPLES
    assert torch.equal(video.audio["waveform"][..., :SAMPLES], audio["waveform"])
    assert not video.audio["waveform"][..., SAMPLES:].any()
    assert sorted(p.name for p in (out_dir / "Ovi").iterdir()) == [item["filename"]]  # no temporary left


def test_audio_decode_resamples_on_request(demo):
    latent = {"samples": torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(1)), "type": "audio"}
    (native,) = run("OviAudioDecode", audio_vae=demo["avae"], audio_latent=latent, sample_rate="16000")
    (hi,) = run("OviAudioDecode", audio_vae=demo["avae"], audio_latent=latent, sample_rate="48000")
    assert native["waveform"].shape == (1, 1, 4096) and hi["sample_rate"] == 48000
    assert hi["waveform"].shape == (1, 1, 3 * 4096)
    # same sound: every third sample of the 48 kHz signal follows the 16 kHz one (away from the edges)
    assert (hi["waveform"][..., 300:-300:3] - native["waveform"][..., 100:-100]).abs().mean() < 0.1 * native[
        "waveform"].abs().mean() + 1e-4


def test_video_latent_is_comfys_wan22_layout(demo):
    """LATENT = raw VAE space (ComfyUI's Wan22.process_in normalises); decoding it = decoding the sampler's output."""
    x = torch.randn(1, 48, 2, 4, 4)
    latent = video_latent_to_comfy(x, torch.device("cpu"))
    from ovi_core.wan_vae import WAN22_LATENT_MEAN, WAN22_LATENT_STD

    raw = x * torch.tensor(WAN22_LATENT_STD).view(1, -1, 1, 1, 1) + torch.tensor(WAN22_LATENT_MEAN).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latent["samples"], raw)
    torch.testing.assert_close(video_latent_from_comfy(latent), x, atol=1e-5, rtol=0)
    (frames,) = run("OviVideoDecode", video_vae=demo["vae"], video_latent=latent, tiled=False, tile_size=512)
    direct = demo["vae"].vae.decode(x)
    torch.testing.assert_close(frames, ((direct + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).flatten(0, 1),
                               atol=1e-5, rtol=0)


def test_tiled_decode_matches_whole_frames_away_from_seams(demo):
    latent = video_latent_to_comfy(torch.randn(1, 48, 1, 32, 32, generator=torch.Generator().manual_seed(3)),
                                   torch.device("cpu"))
    (whole,) = run("OviVideoDecode", video_vae=demo["vae"], video_latent=latent, tiled=False, tile_size=512)
    (tiled,) = run("OviVideoDecode", video_vae=demo["vae"], video_latent=latent, tiled=True, tile_size=384)
    assert tiled.shape == whole.shape == (1, 512, 512, 3)
    assert (tiled - whole).abs().max() < 1e-3  # the node's overlap (16 latent px) keeps seams invisible


def test_same_seed_same_clip_other_seed_other_clip_and_no_model_copies(demo):
    from ovi_core.fusion import OviFusion

    a_v, a_a = sample(demo["model"], demo["text"], seed=7, steps=2)
    count = sum(type(o) is OviFusion for o in gc.get_objects())
    b_v, b_a = sample(demo["model"], demo["text"], seed=7, steps=2)
    c_v, c_a = sample(demo["model"], demo["text"], seed=8, steps=2)
    gc.collect()
    assert sum(type(o) is OviFusion for o in gc.get_objects()) == count  # a rerun builds nothing new
    assert torch.equal(a_v["samples"], b_v["samples"]) and torch.equal(a_a["samples"], b_a["samples"])
    assert not torch.allclose(a_v["samples"], c_v["samples"]) and not torch.allclose(a_a["samples"], c_a["samples"])


@pytest.mark.parametrize("mode,blocks", [("offload after use", 0), ("block swap", 2)])
def test_deprecated_memory_inputs_are_accepted_ignored_and_logged(demo, mode, blocks, caplog):
    (other,) = run("OviModelLoader", model_name=DEMO_ENTRY, variant="auto", weight_dtype="auto", attention="sdpa",
                   memory_mode=mode, swap_blocks=blocks)
    short(other)
    assert f"memory_mode {mode!r} / swap_blocks {blocks} are deprecated and ignored" in caplog.text
    ref = sample(demo["model"], demo["text"], seed=5, steps=2)
    got = sample(other, demo["text"], seed=5, steps=2)
    assert torch.equal(ref[0]["samples"], got[0]["samples"]) and torch.equal(ref[1]["samples"], got[1]["samples"])


def test_progress_ticks_once_per_step_and_interrupt_stops_between_steps(demo, monkeypatch):
    ticks = []
    monkeypatch.setattr(bridge.Progress, "step", lambda self, done, latent=None: ticks.append((done, latent.shape)))
    sample(demo["model"], demo["text"], steps=3)
    assert [t[0] for t in ticks] == [1, 2, 3] and ticks[0][1] == (1, 48, 1, SIDE // 16, SIDE // 16)

    class Cancelled(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled()
        return False

    monkeypatch.setattr(bridge, "check_interrupt", interrupt)
    ticks.clear()
    with pytest.raises(Cancelled):
        sample(demo["model"], demo["text"], steps=5)
    assert [t[0] for t in ticks] == [1]


# ---- image to video ------------------------------------------------------------------------------------------------
def test_start_image_of_any_size_with_alpha_becomes_the_first_latent_frame(demo):
    """The sampler encodes ovi_core.media.first_frame's frame (the CLI's; tests/test_media.py checks the rule).
    Before issue 14 the node had its own rule (antialiased resize, clamped to 0..1); the frame is now the original's
    bicubic without antialias, not clamped, so a random picture upscaled may overshoot [-1, 1] a little."""
    from ovi_core.media import first_frame

    image = torch.rand(1, 47, 93, 4, generator=torch.Generator().manual_seed(0))  # odd size, RGBA, 2:1
    video_latent, _ = sample(demo["model"], demo["text"], steps=2, start_image=image, video_vae=demo["vae"])
    frames = first_frame(image, SIDE, SIDE, demo["model"].model.ovi_variant.target_area)
    first = demo["vae"].vae.encode(frames)
    torch.testing.assert_close(video_latent_from_comfy(video_latent)[:, :, :1], first, atol=1e-5, rtol=0)
    # the centre 47x47 (columns 23..69) of the RGB, scaled to [-1, 1], bicubic without antialias, not clamped
    centre = image[0, :, 23:70, :3].permute(2, 0, 1)[None] * 2 - 1
    expected = torch.nn.functional.interpolate(centre, size=(SIDE, SIDE), mode="bicubic", align_corners=False)
    assert list(frames.shape) == [1, 3, 1, SIDE, SIDE] and torch.equal(frames[:, :, 0], expected)
    # centre crop: a 2:1 picture whose left and right quarters are black keeps only its bright centre
    wide = torch.zeros(1, 40, 80, 3)
    wide[:, :, 20:60] = 1.0
    assert first_frame(wide, SIDE, SIDE).min() > 0.9


def test_start_image_problems_are_clear(demo):
    with pytest.raises(OviInputError, match="batch of 2 images.*ImageFromBatch"):
        sample(demo["model"], demo["text"], start_image=torch.rand(2, 64, 64, 3), video_vae=demo["vae"])
    with pytest.raises(OviInputError, match="needs a video_vae"):
        sample(demo["model"], demo["text"], start_image=torch.rand(1, 64, 64, 3))
    with pytest.raises(OviInputError, match="5 channels"):
        sample(demo["model"], demo["text"], start_image=torch.rand(1, 64, 64, 5), video_vae=demo["vae"])


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_sizes_must_be_multiples_of_32_and_bounded():
    cls = M["OviSampler"]
    assert cls.validate_inputs(width=704, height=1280) is True
    with pytest.raises(OviInputError, match="width 720 is not a multiple of 32.*704 or 736"):
        cls.validate_inputs(width=720, height=720)
    with pytest.raises(OviInputError, match="at least 32 pixels, got 0"):
        cls.validate_inputs(width=0, height=64)
    with pytest.raises(OviInputError, match=r"4096x4096 .* too large.*at most 2,073,600 pixels"):
        cls.validate_inputs(width=4096, height=4096)
    assert cls.validate_inputs(width=None, height=64) is True  # ComfyUI passes None for a linked input
    assert cls.validate_inputs(height=64) is True  # missing: ComfyUI itself says "Required input is missing"


def test_sampler_refuses_bad_sizes_and_settings_with_a_message(demo):
    with pytest.raises(OviInputError, match="height 100 is not a multiple of 32"):
        sample(demo["model"], demo["text"], height=100)
    with pytest.raises(OviInputError, match="slg_layer"):  # the demo model has 3 blocks
        sample(demo["model"], demo["text"], slg_layer=11)


def test_a_size_far_from_the_trained_area_works_with_a_warning(demo, caplog):
    video_latent, _ = sample(demo["model"], demo["text"], steps=1, width=128, height=64)
    assert list(video_latent["samples"].shape[3:]) == [4, 8]  # exactly the size asked for
    assert "more than 10% off" in caplog.text and "e.g. 96x32" in caplog.text


def test_empty_prompt_is_refused_before_and_during_the_run(demo):
    assert "the prompt is empty" in M["OviTextEncode"].validate_inputs(prompt="   ")
    assert M["OviTextEncode"].validate_inputs(prompt=PROMPT) is True
    assert M["OviTextEncode"].validate_inputs(prompt=None) is True  # linked: checked when it runs
    with pytest.raises(OviInputError, match="the prompt is empty"):
        run("OviTextEncode", text_encoder=demo["te"], prompt="", video_negative="", audio_negative="",
            variant="720x720_5s")


def test_prompt_caption_follows_the_variant(demo, caplog):
    caplog.set_level("INFO")
    text, *_ = run("OviTextEncode", text_encoder=demo["te"], prompt=PROMPT, video_negative="blur",
                  audio_negative="echo", variant="960x960_10s")
    assert text.caption_style == "audio_colon"
    text720, *_ = run("OviTextEncode", text_encoder=demo["te"], prompt=PROMPT, video_negative="blur",
                     audio_negative="echo", variant="720x720_5s")
    assert "<AUDCAP>a soft female voice, a quiet room.<ENDAUDCAP>" in caplog.text
    # the rewritten caption changes the encoded tokens
    assert text720.positive.shape != text.positive.shape or not torch.equal(text720.positive, text.positive)


def test_mismatched_latents_and_decoders_are_named(demo):
    video = {"samples": torch.zeros(1, 48, 2, 4, 4)}
    audio = {"samples": torch.zeros(1, 20, 8), "type": "audio"}
    with pytest.raises(OviInputError, match="got an audio latent"):
        run("OviVideoDecode", video_vae=demo["vae"], video_latent=audio, tiled=False, tile_size=512)
    with pytest.raises(OviInputError, match="got an image latent"):
        run("OviVideoDecode", video_vae=demo["vae"], video_latent={"samples": torch.zeros(1, 4, 8, 8)}, tiled=False,
            tile_size=512)
    with pytest.raises(OviInputError, match="16-channel.*Wan2.1"):
        run("OviVideoDecode", video_vae=demo["vae"], video_latent={"samples": torch.zeros(1, 16, 2, 8, 8)},
            tiled=False, tile_size=512)
    with pytest.raises(OviInputError, match="got a video latent"):
        run("OviAudioDecode", audio_vae=demo["avae"], audio_latent=video, sample_rate="16000")
    with pytest.raises(OviInputError, match="64-channel"):
        run("OviAudioDecode", audio_vae=demo["avae"], audio_latent={"samples": torch.zeros(1, 64, 8)},
            sample_rate="16000")


def test_mux_refuses_bad_audio_and_leaves_nothing_behind(out_dir):
    frames = torch.rand(5, 32, 32, 3)
    with pytest.raises(OviInputError, match="batch of 2 sounds"):
        run("OviMux", images=frames, audio={"waveform": torch.zeros(2, 1, 800), "sample_rate": 16000}, fps=24.0,
            filename_prefix="Ovi/x")
    bad = torch.zeros(1, 1, 800)
    bad[0, 0, 5] = float("nan")
    with pytest.raises(OviInputError, match="NaN"):
        run("OviMux", images=frames, audio={"waveform": bad, "sample_rate": 16000}, fps=24.0, filename_prefix="Ovi/x")
    with pytest.raises(OviInputError, match="IMAGE batch"):
        run("OviMux", images=torch.rand(32, 32, 3), audio={"waveform": torch.zeros(1, 1, 800), "sample_rate": 16000},
            fps=24.0, filename_prefix="Ovi/x")
    assert [p for p in out_dir.rglob("*") if p.is_file()] == []
    with pytest.raises(OviInputError, match="inside the output folder"):
        run("OviMux", images=frames, audio={"waveform": torch.zeros(1, 1, 800), "sample_rate": 16000}, fps=24.0,
            filename_prefix="../escape")


def test_mux_trims_audio_longer_than_the_video_and_says_so(out_dir, caplog):
    frames = torch.rand(24, 32, 32, 3)  # 1 s
    stereo = {"waveform": torch.rand(1, 2, 44100 * 2) * 0.1, "sample_rate": 44100}  # 2 s
    result = run("OviMux", images=frames, audio=stereo, fps=24.0, filename_prefix="clip")
    assert result["ui"]["images"][0]["subfolder"] == ""
    assert result["result"][0].audio["waveform"].shape == (1, 2, 44100)
    assert "longer than the video" in caplog.text
    from ovi_core.mux import probe_mp4

    info = probe_mp4(out_dir / result["ui"]["images"][0]["filename"])
    assert info.audio_channels == 2 and info.sample_rate == 44100 and abs(info.audio_duration - 1.0) < 0.03


# ---- loading files ---------------------------------------------------------------------------------------------------
def _write_demo_files(model_dir):
    from ovi_core.demo import build_demo_fusion, build_demo_video_vae
    from ovi_core.weights import save_fusion_checkpoint

    save_fusion_checkpoint(build_demo_fusion(), model_dir["ovi"] / "model_960x960.safetensors")
    vae_sd = {k: v.contiguous() for k, v in build_demo_video_vae().state_dict().items()}
    save_file(vae_sd, str(model_dir["vae"] / "wan2.2_vae.safetensors"))


def test_loaders_read_files_and_detect_the_variant(model_dir):
    _write_demo_files(model_dir)
    (model,) = run("OviModelLoader", model_name="model_960x960.safetensors", variant="auto", weight_dtype="auto",
                   attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
    assert model.model.ovi_variant.name == "960x960_5s" and model.model.diffusion_model.cfg.num_layers == 3
    (forced,) = run("OviModelLoader", model_name="model_960x960.safetensors", variant="960x960_10s",
                    weight_dtype="fp8_e4m3fn", attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
    assert forced.model.ovi_variant.video_latent_length == 61
    assert any(p.dtype == torch.float8_e4m3fn for p in forced.model.diffusion_model.parameters())
    (vae,) = run("OviVideoVAELoader", vae_name="wan2.2_vae.safetensors", precision="fp32")
    from ovi_core.demo import build_demo_video_vae

    z = torch.randn(1, 48, 1, 2, 2)
    torch.testing.assert_close(vae.vae.decode(z), build_demo_video_vae().decode(z))


@pytest.mark.parametrize("fp8", [torch.float8_e5m2, torch.float8_e4m3fn])
def test_fp8_file_keeps_its_own_fp8_storage_on_auto(model_dir, fp8):
    import json

    from nodes.loaders import _stored_dtype
    from ovi_core.demo import build_demo_fusion
    from ovi_core.weights import inspect_checkpoint

    net = build_demo_fusion()
    sd = {k: (v.to(fp8) if ".blocks." in k and v.dim() == 2 else v).contiguous() for k, v in net.state_dict().items()}
    path = model_dir["ovi"] / "ovi_fp8.safetensors"
    save_file(sd, str(path), metadata={"ovi_config": json.dumps(net.cfg.to_reference_json())})
    info = inspect_checkpoint(path)
    assert _stored_dtype(info, "auto", torch.bfloat16) == fp8
    assert _stored_dtype(info, "bf16", torch.float32) == torch.bfloat16
    (model,) = run("OviModelLoader", model_name="ovi_fp8.safetensors", variant="auto", weight_dtype="auto",
                   attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
    dtypes = {p.dtype for p in model.model.diffusion_model.parameters()}
    assert fp8 in dtypes and ({torch.float8_e5m2, torch.float8_e4m3fn} - {fp8}).isdisjoint(dtypes)


def test_wrong_files_in_loaders_say_what_they_are(model_dir):
    _write_demo_files(model_dir)
    (model_dir["ovi"] / "wan2.2_vae.safetensors").write_bytes((model_dir["vae"] / "wan2.2_vae.safetensors").read_bytes())
    (model_dir["vae"] / "model_960x960.safetensors").write_bytes(
        (model_dir["ovi"] / "model_960x960.safetensors").read_bytes())
    (model_dir["ovi"] / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WrongFileError, match="looks like a Wan video VAE"):
        run("OviModelLoader", model_name="wan2.2_vae.safetensors", variant="auto", weight_dtype="auto",
            attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
    with pytest.raises(WrongFileError, match="broken.safetensors is truncated.*download it again"):
        run("OviModelLoader", model_name="broken.safetensors", variant="auto", weight_dtype="auto",
            attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
    with pytest.raises(WrongFileError, match="not a Wan2.2 video VAE.*Ovi fusion"):
        run("OviVideoVAELoader", vae_name="model_960x960.safetensors", precision="auto")
    with pytest.raises(WrongFileError, match="was not found in models/ovi, models/diffusion_models"):
        run("OviModelLoader", model_name="gone.safetensors", variant="auto", weight_dtype="auto", attention="sdpa",
            memory_mode="all on GPU", swap_blocks=0)
    with pytest.raises(OviInputError, match="for both"):
        run("OviAudioVAELoader", vae_name=DEMO_ENTRY, vocoder_name="best_netG.pt")


# ---- text as CONDITIONING, the joint audio+video LATENT ---------------------------------------------------------------
def test_text_encode_gives_core_conditioning_that_drives_the_sampler_like_ovi_text(demo):
    text, positive, negative, audio_negative = run("OviTextEncode", text_encoder=demo["te"], prompt=PROMPT,
                                                   video_negative="blur", audio_negative="echo", variant="720x720_5s")
    (pos, pos_extra), = positive
    assert pos.shape == (1, 512, 4096) and pos_extra == {}
    n = text.positive.shape[0]
    assert torch.equal(pos[0, :n], text.positive) and not pos[0, n:].any()  # Ovi's zero padding to 512 tokens
    (neg, neg_extra), = negative
    assert torch.equal(neg[0, : text.video_negative.shape[0]], text.video_negative)
    assert torch.equal(neg_extra["ovi_audio_context"], audio_negative[0][0])  # one negative pass, each tower its own
    assert torch.equal(audio_negative[0][0][0, : text.audio_negative.shape[0]], text.audio_negative)
    ours = sample(demo["model"], text, seed=3, steps=2)
    theirs = sample(demo["model"], None, seed=3, steps=2, positive=positive, negative=negative)
    for a, b in zip(ours, theirs):
        assert torch.equal(a["samples"], b["samples"])
    # the video negative alone: both towers get it (what core CLIPTextEncode's negative gives)
    plain = sample(demo["model"], None, seed=3, steps=2, positive=positive, negative=[[neg, {}]])
    assert not torch.equal(plain[1]["samples"], ours[1]["samples"])


def test_sampler_returns_the_joint_latent_and_takes_one(demo):
    video, audio, joint = sample_all(demo["model"], demo["text"], seed=4, steps=2)
    parts = joint["samples"].unbind()
    assert torch.equal(parts[0], video["samples"]) and torch.equal(parts[1], audio["samples"])
    # a joint latent sets the size (its values are replaced by noise): the same clip as width / height
    sized = {"samples": bridge.nested((torch.randn(1, 48, FRAMES_LAT, 4, 4), torch.randn(1, 20, AUDIO_LAT)))}
    again = sample_all(demo["model"], demo["text"], seed=4, steps=2, width=704, height=704, latent=sized)
    assert torch.equal(again[0]["samples"], video["samples"]) and torch.equal(again[1]["samples"], audio["samples"])


def test_a_joint_latent_whose_mask_keeps_video_frame_0_is_image_to_video(demo):
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    i2v = sample(demo["model"], demo["text"], seed=6, steps=2, start_image=image, video_vae=demo["vae"])
    latent = {"samples": bridge.nested((i2v[0]["samples"], torch.zeros(1, 20, AUDIO_LAT))),
              "noise_mask": bridge.nested((torch.cat([torch.zeros(1, 1, 1, 4, 4),
                                                      torch.ones(1, 1, FRAMES_LAT - 1, 4, 4)], dim=2),
                                           torch.ones(1, 20, AUDIO_LAT)))}
    masked = sample(demo["model"], demo["text"], seed=6, steps=2, latent=latent)
    torch.testing.assert_close(masked[0]["samples"], i2v[0]["samples"], atol=1e-5, rtol=0)
    torch.testing.assert_close(masked[1]["samples"], i2v[1]["samples"], atol=1e-5, rtol=0)


# ---- core CLIPTextEncode as Ovi text ------------------------------------------------------------------------------------
def _clip_text_encode_standin(states: torch.Tensor) -> list:
    """What core CLIPTextEncode returns with a umT5-XXL: [[states zero-padded to [1, 512, 4096], {...}]]."""
    padded = torch.zeros(1, 512, 4096)
    padded[0, : states.shape[0]] = states
    return [[padded, {"pooled_output": None}]]


def test_conditioning_from_clip_text_encode_drives_the_sampler_like_ovi_text(demo):
    text = demo["text"]
    (adapted,) = run("OviTextFromConditioning", positive=_clip_text_encode_standin(text.positive),
                     video_negative=_clip_text_encode_standin(text.video_negative),
                     audio_negative=_clip_text_encode_standin(text.audio_negative))
    assert torch.equal(adapted.positive, text.positive) and adapted.caption_style is None
    ours = sample(demo["model"], text, seed=3, steps=2)
    theirs = sample(demo["model"], adapted, seed=3, steps=2)
    torch.testing.assert_close(theirs[0]["samples"], ours[0]["samples"], atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs[1]["samples"], ours[1]["samples"], atol=1e-5, rtol=0)


def test_conditioning_adapter_fills_missing_negatives_and_refuses_other_encoders(demo, caplog):
    cond = _clip_text_encode_standin(demo["text"].positive)
    (only_audio,) = run("OviTextFromConditioning", positive=cond, audio_negative=cond)
    assert torch.equal(only_audio.video_negative, only_audio.audio_negative)
    (none,) = run("OviTextFromConditioning", positive=cond)
    assert not none.video_negative.any() and "all-zero" in caplog.text
    with pytest.raises(OviInputError, match="width 768.*CLIPLoader, type 'wan'"):
        run("OviTextFromConditioning", positive=[[torch.zeros(1, 77, 768), {}]])
    long = [[torch.ones(1, 600, 4096), {}]]
    (cut,) = run("OviTextFromConditioning", positive=long)
    assert cut.positive.shape == (512, 4096)


def test_root_init_is_importable_by_path_like_comfyui_does():
    spec = importlib.util.spec_from_file_location("comfyui_ovi_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert {cls.define_schema().node_id for cls in module.NODE_LIST} == set(M)
        assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # ComfyUI would take it and skip comfy_entrypoint
    finally:
        for name in [n for n in sys.modules if n.startswith(spec.name)]:
            del sys.modules[name]


# ---- inside a real ComfyUI (opt-in) ---------------------------------------------------------------------------------
COMFY_SCRIPT = r"""
import importlib.util, sys, tempfile, torch
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, COMFY_DIR)
import comfy.options
comfy.options.enable_args_parsing()
import comfy.model_management as mm, folder_paths
spec = importlib.util.spec_from_file_location("ComfyUI-Ovi", PACK + "/__init__.py", submodule_search_locations=[PACK])
pack = importlib.util.module_from_spec(spec); sys.modules["ComfyUI-Ovi"] = pack; spec.loader.exec_module(pack)
bridge = sys.modules["ComfyUI-Ovi.nodes.bridge"]
assert bridge.HAVE_COMFY and bridge.HAVE_COMFY_API and "ovi" in folder_paths.folder_names_and_paths and "mmaudio" in folder_paths.folder_names_and_paths
import asyncio, comfy.model_patcher
from comfy_api.latest import io
ext = asyncio.run(pack.comfy_entrypoint())
node_list = asyncio.run(ext.get_node_list())
assert all(issubclass(c, io.ComfyNode) for c in node_list)
M = {c.define_schema().node_id: c for c in node_list}
print("nodes", sorted(M))
def run(n, **k):
    out = M[n].execute(**k)
    return out.args if out.ui is None else {"ui": out.ui, "result": out.args}
D = bridge.DEMO_ENTRY
out = tempfile.mkdtemp(); folder_paths.set_output_directory(out)
def loaded():
    return [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]
(model,) = run("OviModelLoader", model_name=D, variant="auto", weight_dtype="auto", attention="sdpa", memory_mode="all on GPU", swap_blocks=0)
assert isinstance(model, comfy.model_patcher.ModelPatcher) and type(model.model).__name__ == "OviAV"
assert all(getattr(m, "comfy_cast_weights", None) is not None for m in model.model.diffusion_model.modules() if isinstance(m, torch.nn.Linear))
v = model.model.ovi_variant
model.model.ovi_variant = v.__class__(**{**v.__dict__, "video_latent_length": 3, "audio_latent_length": 11})
(te,) = run("OviTextEncoderLoader", text_encoder_name=D, precision="auto")
text, positive, negative, audio_negative = run("OviTextEncode", text_encoder=te, prompt="a <S>b<E> <AUDCAP>c<ENDAUDCAP>", video_negative="x", audio_negative="y", variant="720x720_5s")
assert positive[0][0].shape == (1, 512, 4096) and "ovi_audio_context" in negative[0][1]
(vae,) = run("OviVideoVAELoader", vae_name=D, precision="auto")
(avae,) = run("OviAudioVAELoader", vae_name=D, vocoder_name=D)
image = torch.rand(1, 40, 50, 3)
settings = dict(model=model, seed=1, steps=2, solver="unipc", shift=5.0, video_guidance=4.0, audio_guidance=3.0, slg_layer=1, width=64, height=64)
v, a, joint = run("OviSampler", text=text, start_image=image, video_vae=vae, **settings)
print("loaded after sampling:", loaded())
assert "OviAV" in loaded()
assert type(joint["samples"]).__name__ == "NestedTensor"
assert torch.equal(joint["samples"].unbind()[0], v["samples"]) and torch.equal(joint["samples"].unbind()[1], a["samples"])
# core's A/V latent nodes: LTXVSeparateAVLatent splits the joint output bit for bit; a joint latent from
# LTXVConcatAVLatent whose video mask keeps frame 0 (LTXVImgToVideoInplace's [B, 1, F, 1, 1] mask) is image-to-video
from comfy_extras import nodes_lt
sv, sa = nodes_lt.LTXVSeparateAVLatent.execute(av_latent=joint).args
assert torch.equal(sv["samples"], v["samples"]) and torch.equal(sa["samples"], a["samples"])
keep0 = torch.cat([torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 2, 1, 1)], dim=2)
(joint_in,) = nodes_lt.LTXVConcatAVLatent.execute(video_latent={"samples": v["samples"].clone(), "noise_mask": keep0}, audio_latent={"samples": torch.zeros_like(a["samples"]), "type": "audio"}).args
v3, a3, _ = run("OviSampler", text=text, latent=joint_in, **settings)
assert (v3["samples"] - v["samples"]).abs().max() < 1e-5 and (a3["samples"] - a["samples"]).abs().max() < 1e-5
# the CONDITIONING outputs drive the sampler like the OVI_TEXT one
v2, a2, _ = run("OviSampler", positive=positive, negative=negative, start_image=image, video_vae=vae, **settings)
assert (v2["samples"] - v["samples"]).abs().max() < 1e-5 and (a2["samples"] - a["samples"]).abs().max() < 1e-5
(frames,) = run("OviVideoDecode", video_vae=vae, video_latent=v, tiled=False, tile_size=512)
(audio,) = run("OviAudioDecode", audio_vae=avae, audio_latent=a, sample_rate="16000")
res = run("OviMux", images=frames, audio=audio, fps=24.0, filename_prefix="Ovi/x")
video = res["result"][0]
assert type(video).__name__ == "VideoFromComponents", type(video)
assert video.get_components().images.shape[0] == 9
# a checkpoint file through ComfyUI's operations: fp8 storage -> manual_cast layers (weights upcast per call)
from ovi_core.demo import build_demo_fusion
from ovi_core.weights import save_fusion_checkpoint
models = tempfile.mkdtemp(); folder_paths.add_model_folder_path("ovi", models)
save_fusion_checkpoint(build_demo_fusion(), models + "/model_960x960.safetensors")
(fp8,) = run("OviModelLoader", model_name="model_960x960.safetensors", variant="auto", weight_dtype="fp8_e4m3fn", attention="sdpa", memory_mode="block swap", swap_blocks=2)
linears = [m for m in fp8.model.diffusion_model.modules() if isinstance(m, torch.nn.Linear)]
assert all(m.comfy_cast_weights for m in linears) and any(m.weight.dtype == torch.float8_e4m3fn for m in linears)
assert fp8.model.ovi_variant.name == "960x960_5s"
fv0 = fp8.model.ovi_variant
fp8.model.ovi_variant = fv0.__class__(**{**fv0.__dict__, "video_latent_length": 2, "audio_latent_length": 6})
fv, fa, _ = run("OviSampler", text=text, **{**settings, "model": fp8, "steps": 1})
assert torch.isfinite(fv["samples"]).all() and torch.isfinite(fa["samples"]).all()
# ComfyUI's cancel flag stops the core inside each long operation (not only between sampling steps), once
from ovi_core import interrupt
assert bridge._comfy_interrupt_checker in interrupt._checkers
long_operations = {
    "text encoder": lambda: run("OviTextEncode", text_encoder=te, prompt="a <S>b<E> <AUDCAP>c<ENDAUDCAP>", video_negative="x", audio_negative="y", variant="720x720_5s"),
    "video decode": lambda: run("OviVideoDecode", video_vae=vae, video_latent=v, tiled=False, tile_size=512),
    "audio decode": lambda: run("OviAudioDecode", audio_vae=avae, audio_latent=a, sample_rate="16000"),
    "mux": lambda: run("OviMux", images=frames, audio=audio, fps=24.0, filename_prefix="Ovi/cancelled"),
}
for what, call in long_operations.items():
    mm.interrupt_current_processing(True)
    try:
        call()
        raise SystemExit(what + " was not interrupted")
    except mm.InterruptProcessingException:
        pass
    assert not mm.processing_interrupted(), what  # consumed: the next run works
    call()
import os
assert not [f for f in os.listdir(os.path.join(out, "Ovi")) if f.startswith(".")], os.listdir(os.path.join(out, "Ovi"))
mm.unload_all_models()
assert loaded() == [], loaded()
print("OK")
"""


def test_inside_a_real_comfyui(comfy_python, tmp_path):
    """The nodes in-process with ComfyUI's own model management, folders and VIDEO type (CPU), in the ComfyUI venv
    the server tests use (tests/comfy_server.py); the ComfyUI tree is copied first (the shared one is read-only)."""
    import shutil

    from tests import comfy_server as cs

    comfy_dir = tmp_path / "ComfyUI"
    shutil.copytree(cs.shared_dir() / "ComfyUI", comfy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    code = f"COMFY_DIR = {str(comfy_dir)!r}\nPACK = {str(ROOT)!r}\n" + COMFY_SCRIPT
    r = subprocess.run([str(comfy_python), "-c", code], cwd=comfy_dir, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-3000:] + r.stderr[-3000:]


# ---- ComfyUI's cancel inside long operations, and a missing requirement ----------------------------------------------
def test_comfyuis_cancel_is_an_ovi_core_interrupt_checker(monkeypatch):
    """With ComfyUI present the bridge installs throw_exception_if_processing_interrupted as an ovi_core.interrupt
    checker, so every interrupt.check() inside the core (per block, tile, layer, frame) raises ComfyUI's exception."""
    from ovi_core import interrupt

    class InterruptProcessingException(Exception):
        pass

    flag = []

    class FakeModelManagement:
        @staticmethod
        def throw_exception_if_processing_interrupted():
            if flag:
                flag.clear()
                raise InterruptProcessingException()

    monkeypatch.setattr(bridge, "HAVE_COMFY", True)
    monkeypatch.setattr(bridge, "mm", FakeModelManagement)
    monkeypatch.setattr(bridge, "_checker_installed", False)
    try:
        assert bridge.install_interrupt_checker() and bridge.install_interrupt_checker()
        assert interrupt._checkers.count(bridge._comfy_interrupt_checker) == 1  # installed once
        interrupt.check("a block")  # not cancelled: nothing happens
        flag.append(True)
        with pytest.raises(InterruptProcessingException):
            interrupt.check("a block")
        interrupt.check("the next run")  # ComfyUI clears its flag when it raises: the next run works
    finally:
        interrupt.remove_checker(bridge._comfy_interrupt_checker)
    monkeypatch.setattr(bridge, "HAVE_COMFY", False)
    assert bridge.install_interrupt_checker() is False


MISSING_REQUIREMENT_SCRIPT = r"""
import importlib.util, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
sys.modules["ftfy"] = None  # as if ComfyUI's Python lacked it
spec = importlib.util.spec_from_file_location("ComfyUI-Ovi", PACK + "/__init__.py", submodule_search_locations=[PACK])
pack = importlib.util.module_from_spec(spec); sys.modules["ComfyUI-Ovi"] = pack; spec.loader.exec_module(pack)
print("NODES", len(pack.NODE_CLASS_MAPPINGS))
"""


def test_a_missing_requirement_is_one_log_line_naming_the_pip_command():
    r = subprocess.run([sys.executable, "-c", f"PACK = {str(ROOT)!r}\n" + MISSING_REQUIREMENT_SCRIPT], cwd="/",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "NODES 0"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("ERROR ComfyUI-Ovi: missing Python package ftfy;")
    assert f"{sys.executable} -m pip install -r {ROOT / 'requirements.txt'}" in lines[0]


def test_the_requirement_check_covers_requirements_txt():
    spec = importlib.util.spec_from_file_location("comfyui_ovi_requirements", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        listed = {re.split(r"[<>=!~\[ ;]", line.strip())[0].lower()
                  for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")}
        assert set(module.REQUIRED_MODULES) == listed
        assert module.missing_requirements() == []
    finally:
        for name in [n for n in sys.modules if n.startswith(spec.name)]:
            del sys.modules[name]
