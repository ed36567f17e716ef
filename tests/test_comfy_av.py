"""Video -> audio and audio -> video in a real ComfyUI 0.8 server (CPU, 127.0.0.1), through the shipped workflows.

The session's one server (tests/conftest.py's ``comfy``, built with tests/comfy_server.py); workflows become API
prompts with the server's /object_info (test_comfy_native.to_api). On the demo model:
  * the demo V2A workflow (an IMAGE batch of 60 frames taken as 30 fps -> sound) writes an mp4 of the ORIGINAL 60
    frames with an audio stream of the same length, the AUDIO in the muxed VIDEO lasts exactly 2 s (60 / 30, to the
    sample), and the video latent comes out of SamplerCustomAdvanced bit for bit;
  * the demo A2V workflow writes a 121-frame mp4 with equal video and audio lengths, the encoded audio latent comes
    out bit for bit and video latent frame 0 (the start picture) too;
  * the real-weight V2A (LoadVideo) and A2V (LoadAudio + LoadImage) workflows run with the demo entry in every
    loader on a clip / a voice / a picture written into the server's input folder.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import torch

from tests import comfy_server as cs
from tests.test_comfy_native import add, ids_of, one, read_latent, run_ok, save_parts, to_api

ROOT = Path(__file__).resolve().parent.parent
WF = ROOT / "workflows"
DEMO = "(demo) tiny built-in model"
AV_IDS = ("OviAudioEncode", "OviVideoToAudio", "OviAVLatentFromParts")


def prompt_of(name: str, info: dict) -> dict:
    return to_api(json.loads((WF / name).read_text()), info)


def check_mp4(server, entry: dict, mux_id: str, frames: int, size: tuple[int, int], fps: float):
    from ovi_core.mux import probe_mp4

    (item,) = entry["outputs"][mux_id]["images"]
    clip = probe_mp4(server.output_dir / item["subfolder"] / item["filename"])
    assert (clip.video_streams, clip.audio_streams, clip.num_frames, clip.width, clip.height) == (1, 1, frames, *size)
    assert abs(clip.video_duration - frames / fps) < 1 / fps
    assert abs(clip.audio_duration - clip.video_duration) < 1 / fps, (clip.audio_duration, clip.video_duration)
    return clip


def saved_audio_samples(server, entry: dict, node_id: str) -> tuple[int, int]:
    """(samples, sample rate) of a core SaveAudio output (FLAC: lossless, every sample counted)."""
    import av

    (item,) = entry["outputs"][node_id]["audio"]
    with av.open(str(server.output_dir / item["subfolder"] / item["filename"])) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        return sum(f.samples for f in c.decode(audio=0)), rate


def test_av_nodes_are_registered_with_tooltips(comfy, info):
    for node_id in AV_IDS:
        entry = info[node_id]
        assert entry["python_module"] == f"custom_nodes.{cs.PACK_DIR_NAME}" and entry["description"]
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert (spec[1] if len(spec) > 1 else {}).get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_demo_v2a_workflow_writes_the_original_frames_with_sound_of_their_duration(comfy, info):
    prompt = prompt_of("ovi_demo_v2a_tiny_model.json", info)
    v2a, sca, mux = one(prompt, "OviVideoToAudio"), one(prompt, "SamplerCustomAdvanced"), one(prompt, "OviMux")
    held = save_parts(prompt, [v2a, 0], "v2a_in")
    out = save_parts(prompt, [sca, 0], "v2a_out")
    parts = add(prompt, "GetVideoComponents", video=[mux, 0])
    audio_save = add(prompt, "SaveAudio", audio=[parts, 1], filename_prefix="av_test/v2a_audio")
    entry = run_ok(comfy, prompt)
    check_mp4(comfy, entry, mux, 60, (96, 80), 30.0)
    samples, rate = saved_audio_samples(comfy, entry, audio_save)
    assert rate == 16000 and samples == round(60 / 30 * 16000), samples  # the clip's exact duration: 2 s
    video_in, video_out = read_latent(comfy, entry, held[0]), read_latent(comfy, entry, out[0])
    assert video_in.shape == (1, 48, 31, 4, 4) and torch.equal(video_in, video_out)
    audio_out = read_latent(comfy, entry, out[1])
    assert audio_out.shape == (1, 20, 157) and audio_out.abs().max() > 0.1  # generated


def test_demo_a2v_workflow_keeps_the_sound_and_the_start_picture(comfy, info):
    prompt = prompt_of("ovi_demo_a2v_tiny_model.json", info)
    parts, mux = one(prompt, "OviAVLatentFromParts"), one(prompt, "OviMux")
    (sca,) = [i for i in ids_of(prompt, "SamplerCustomAdvanced") if prompt[i]["inputs"]["latent_image"][0] == parts]
    held = save_parts(prompt, [parts, 0], "a2v_in")
    out = save_parts(prompt, [sca, 0], "a2v_out")
    entry = run_ok(comfy, prompt)
    check_mp4(comfy, entry, mux, 121, (64, 64), 24.0)
    audio_in, audio_out = read_latent(comfy, entry, held[1]), read_latent(comfy, entry, out[1])
    assert audio_in.shape == (1, 20, 157) and torch.equal(audio_in, audio_out)
    video_in, video_out = read_latent(comfy, entry, held[0]), read_latent(comfy, entry, out[0])
    assert torch.equal(video_in[:, :, :1], video_out[:, :, :1]) and video_in[:, :, :1].abs().max() > 0
    assert (video_in[:, :, 1:] - video_out[:, :, 1:]).abs().max() > 1e-3  # the rest is generated


def test_demo_a2v_workflow_with_the_lip_sync_knob(comfy, info):
    """The shipped audio -> video workflow with sync guidance on (Ovi Guider's sync_guidance): it runs in the real
    server, the held sound still comes out bit for bit, and the picture differs from the run without the knob."""
    outs = []
    for sync in (0.0, 1.5):
        prompt = prompt_of("ovi_demo_a2v_tiny_model.json", info)
        parts, mux = one(prompt, "OviAVLatentFromParts"), one(prompt, "OviMux")
        (sca,) = [i for i in ids_of(prompt, "SamplerCustomAdvanced") if prompt[i]["inputs"]["latent_image"][0] == parts]
        guider = prompt[sca]["inputs"]["guider"][0]
        assert prompt[guider]["class_type"] == "OviGuider"
        prompt[guider]["inputs"].update(sync_guidance=sync, sync_cut="both")
        held = save_parts(prompt, [parts, 0], f"a2v_sync{sync:g}_in")
        out = save_parts(prompt, [sca, 0], f"a2v_sync{sync:g}_out")
        entry = run_ok(comfy, prompt)
        check_mp4(comfy, entry, mux, 121, (64, 64), 24.0)
        assert torch.equal(read_latent(comfy, entry, held[1]), read_latent(comfy, entry, out[1]))  # the voice, held
        outs.append(read_latent(comfy, entry, out[0]))
    assert (outs[0][:, :, 1:] - outs[1][:, :, 1:]).abs().max() > 1e-3  # the knob moves the picture


def _demo_everywhere(prompt: dict, steps: int = 2) -> None:
    for node in prompt.values():
        i, t = node["inputs"], node["class_type"]
        for name in ("model_name", "text_encoder_name", "vae_name", "vocoder_name"):
            if name in i and t.startswith("Ovi"):
                i[name] = DEMO
        if t in ("OviVideoToAudio", "OviAVLatentFromParts"):
            i.update(width=64, height=64)
        if t == "OviScheduler":
            i["steps"] = steps
        if t == "OviGuider":
            i["skip_layer"] = 1


def _write_inputs(folder: Path) -> None:
    from PIL import Image

    from ovi_core.mux import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    write_mp4(folder / "example.mp4", torch.rand(50, 48, 80, 3, generator=g), fps=25.0)  # 2 s at 25 fps, silent
    rate, n = 44100, 44100 * 3
    t = np.arange(n) / rate
    stereo = np.stack([np.sin(2 * math.pi * 180 * t), np.sin(2 * math.pi * 240 * t)], 1) * 0.4
    with wave.open(str(folder / "voice.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(
        folder / "example.png")


def test_real_weight_v2a_and_a2v_workflows_run_on_the_demo_models(comfy, info):
    """LoadVideo (50 frames at 25 fps, silent) -> sound; LoadAudio (3 s stereo 44.1 kHz) + LoadImage -> video."""
    _write_inputs(comfy.root / "input")
    v2a = prompt_of("ovi_v2a_loadvideo_720x720_5s.json", info)
    _demo_everywhere(v2a)
    mux = one(v2a, "OviMux")
    entry = run_ok(comfy, v2a)
    check_mp4(comfy, entry, mux, 50, (80, 48), 25.0)  # the loaded clip's own frames, size and fps

    a2v = prompt_of("ovi_a2v_loadaudio_720x720_5s.json", info)
    _demo_everywhere(a2v)
    mux = one(a2v, "OviMux")
    entry = run_ok(comfy, a2v)
    clip = check_mp4(comfy, entry, mux, 121, (64, 64), 24.0)
    assert clip.audio_channels == 2  # the original stereo voice, cut at the last frame
