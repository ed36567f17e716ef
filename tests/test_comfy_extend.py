"""Ovi Extend / Ovi Join Clips and LoRA in a real ComfyUI 0.8 server (CPU, 127.0.0.1), on the demo model.

The session's one server (tests/conftest.py's ``comfy``; tests/comfy_server.py: ComfyUI's venv, a copy of its tree, this repository linked as a custom
node); prompts come from the shipped UI workflows through the server's /object_info (tests/test_comfy_native.to_api).
Checked:
  * workflows/ovi_extend_demo_tiny_model.json (three 5 s windows, 1 s overlap) runs; its mp4 has exactly
    121 + 96 + 96 = 313 frames, and the joined AUDIO (saved losslessly as FLAC next to it) exactly
    3·80384 − 2·16384 = 208384 samples at 16 kHz; each next window's sampled latent holds the previous window's
    audio latents 125..156 and the re-encoded start frames bit for bit;
  * core LoraLoaderModelOnly with a Wan2.2-style LoRA file in models/loras patches the Ovi MODEL in the native demo
    workflow (the clip changes, the log names the patched layers); a LoRA for another model leaves the clip as it
    was and the log says so with the key count;
  * the real-weight workflows/ovi_extend_long_720x720_5s.json (seven windows) is refused by the server only for its
    model files (each named in its note) and, on the demo models, writes 121 + 6·96 = 697 frames;
  * the real-weight workflows/ovi_lora_t2av_720x720_5s.json is refused only for its files (the LoRA's included)
    and, on the demo models with a Wan2.2-style LoRA picked, runs and patches the model;
  * an overlap as long as the window gets Ovi's message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import comfy_server as cs
from tests.test_comfy_native import (
    FILE_INPUTS,
    FRONTEND_ONLY,
    _widget_names,
    add,
    ids_of,
    on_demo_models,
    one,
    read_latent,
    run_ok,
    to_api,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO_EXTEND = ROOT / "workflows" / "ovi_extend_demo_tiny_model.json"
DEMO_NATIVE = ROOT / "workflows" / "ovi_demo_native_tiny_model.json"
REAL_EXTEND = ROOT / "workflows" / "ovi_extend_long_720x720_5s.json"
REAL_LORA = ROOT / "workflows" / "ovi_lora_t2av_720x720_5s.json"
FRAMES, SAMPLES, RATE = 121, 512 * 157, 16000
KEPT_FRAMES, ADVANCE, SHIFT, HELD, KEPT_LATENTS = 25, 96, 125, 32, 7  # the 1 s seam of 5 s windows


def test_extend_nodes_are_registered_with_tooltips(info):
    for node_id in ("OviExtend", "OviJoinClips"):
        entry = info[node_id]
        assert entry["python_module"] == f"custom_nodes.{cs.PACK_DIR_NAME}"
        assert entry["category"] == "Ovi/extend" and entry["description"]
        for name, spec in entry["input"]["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name}"


@pytest.mark.parametrize("path", [DEMO_EXTEND, REAL_EXTEND, REAL_LORA], ids=lambda p: p.stem)
def test_workflow_widgets_and_links_match_the_server_definitions(info, path):
    """What the frontend would load: every node's widgets_values has exactly the server's widget slots, every link
    joins an output and an input of the same type."""
    workflow = json.loads(path.read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert len(node["widgets_values"]) == len(_widget_names(info[node["type"]])), (path.name, node["id"])
        assert [o["type"] for o in node["outputs"]] == info[node["type"]]["output"], (path.name, node["id"])
    for link_id, src, slot, dst, dst_slot, kind in workflow["links"]:
        assert nodes[src]["outputs"][slot]["type"] == kind and link_id in nodes[src]["outputs"][slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind and nodes[dst]["inputs"][dst_slot]["link"] == link_id


def _save_parts(prompt: dict, joint: list, name: str) -> tuple[str, str]:
    sep = add(prompt, "LTXVSeparateAVLatent", av_latent=joint)
    return (add(prompt, "SaveLatent", samples=[sep, 0], filename_prefix=f"extend_test/{name}_video"),
            add(prompt, "SaveLatent", samples=[sep, 1], filename_prefix=f"extend_test/{name}_audio"))


def _flac_samples(path: Path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as f:
        stream = f.streams.audio[0]
        return sum(frame.samples for frame in f.decode(stream)), stream.rate


def test_demo_extend_workflow_three_windows_exact_lengths_and_held_seams(comfy, info):
    from ovi_core.mux import probe_mp4

    prompt = to_api(json.loads(DEMO_EXTEND.read_text()), info)
    samplers = sorted(ids_of(prompt, "SamplerCustomAdvanced"), key=int)
    extends = sorted(ids_of(prompt, "OviExtend"), key=int)
    joins = sorted(ids_of(prompt, "OviJoinClips"), key=int)
    assert len(samplers) == 3 and len(extends) == 2 and len(joins) == 2
    windows = [_save_parts(prompt, [s, 0], f"window{k}") for k, s in enumerate(samplers)]
    starts = [_save_parts(prompt, [e, 0], f"extend{k + 1}") for k, e in enumerate(extends)]
    flac = add(prompt, "SaveAudio", audio=[joins[-1], 1], filename_prefix="extend_test/joined")
    mux = one(prompt, "OviMux")
    entry = run_ok(comfy, prompt, timeout=600)

    (item,) = entry["outputs"][mux]["images"]
    clip = probe_mp4(comfy.output_dir / item["subfolder"] / item["filename"])
    frames = 3 * FRAMES - 2 * KEPT_FRAMES
    assert (clip.video_streams, clip.audio_streams, clip.num_frames, clip.width, clip.height) == (1, 1, frames, 64, 64)
    assert frames == FRAMES + 2 * ADVANCE == 313
    assert abs(clip.audio_duration - frames / 24) < 1 / 24, (clip.audio_duration, clip.video_duration)
    (saved,) = entry["outputs"][flac]["audio"]
    samples, rate = _flac_samples(comfy.output_dir / saved["subfolder"] / saved["filename"])
    overlap = SAMPLES - ADVANCE * RATE // 24  # 16384
    assert (samples, rate) == (3 * SAMPLES - 2 * overlap, RATE) == (208384, 16000)
    print(f"extended clip: {clip.num_frames} frames ({clip.num_frames / 24:.4f} s), joined audio {samples} samples "
          f"({samples / RATE:.4f} s); mp4 audio {clip.audio_duration:.4f} s")

    for k in (1, 2):  # window k holds window k-1's audio after the seam, and its re-encoded start frames
        prev_audio = read_latent(comfy, entry, windows[k - 1][1])
        video, audio = (read_latent(comfy, entry, i) for i in windows[k])
        start_video, start_audio = (read_latent(comfy, entry, i) for i in starts[k - 1])
        assert audio.shape == prev_audio.shape == (1, 20, 157)
        assert torch.equal(audio[:, :, :HELD], prev_audio[:, :, SHIFT:]), k
        assert torch.equal(start_audio[:, :, :HELD], prev_audio[:, :, SHIFT:]), k
        assert torch.equal(video[:, :, :KEPT_LATENTS], start_video[:, :, :KEPT_LATENTS]), k
        assert bool(audio[:, :, HELD:].abs().sum() > 0) and not start_audio[:, :, HELD:].any(), k  # the rest is new
    assert "Ovi Extend: the next window repeats the last 25 frames (7 video latents) and holds 32 audio latents" \
        in comfy.log(400_000)


def test_extend_overlap_as_long_as_the_window_is_refused(comfy, info):
    prompt = to_api(json.loads(DEMO_EXTEND.read_text()), info)
    prompt[sorted(ids_of(prompt, "OviExtend"), key=int)[0]]["inputs"]["overlap"] = 9.5
    status, answer = comfy.queue(prompt)
    assert status == 200, answer
    entry = comfy.wait(answer["prompt_id"], 600)
    assert entry["status"]["status_str"] == "error"
    text = json.dumps(entry["status"]["messages"])
    assert "overlap 9.5 s is as long as the window itself" in text, text[:2000]


# ---- LoRA ----------------------------------------------------------------------------------------------------------
def _write_lora(path: Path, layers: dict[str, tuple[int, int]], seed: int) -> None:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_f, in_f) in layers.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, in_f, generator=g)
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_f, 4, generator=g)
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def _native_with_lora(info: dict, lora: str | None, name: str) -> tuple[dict, tuple[str, str]]:
    prompt = to_api(json.loads(DEMO_NATIVE.read_text()), info)
    guider = prompt[one(prompt, "OviGuider")]["inputs"]
    if lora is not None:
        guider["model"] = [add(prompt, "LoraLoaderModelOnly", model=guider["model"], lora_name=lora,
                               strength_model=1.0), 0]
    prompt[one(prompt, "OviMux")]["inputs"]["filename_prefix"] = f"Ovi/lora_{name}"
    return prompt, _save_parts(prompt, [one(prompt, "SamplerCustomAdvanced"), 0], f"lora_{name}")


def test_lora_files_in_models_loras_patch_the_native_demo(comfy, info):
    from ovi_core.demo import build_demo_fusion

    sd = build_demo_fusion().state_dict()
    wan = {f"lora_unet_blocks_{i}_{layer.replace('.', '_')}": tuple(sd[f"video_model.blocks.{i}.{layer}.weight"].shape)
           for i in range(3) for layer in ("self_attn.q", "cross_attn.o", "ffn.0")}
    other = {f"lora_unet_double_blocks_{i}_img_attn_qkv": (12, 8) for i in range(2)}
    loras = comfy.root / "ComfyUI" / "models" / "loras"
    _write_lora(loras / "wan22_ti2v_style.safetensors", wan, 1)
    _write_lora(loras / "flux_style.safetensors", other, 2)

    runs = {}
    for name, lora in (("none", None), ("wan", "wan22_ti2v_style.safetensors"), ("other", "flux_style.safetensors")):
        prompt, saved = _native_with_lora(info, lora, name)
        entry = run_ok(comfy, prompt, timeout=600)
        runs[name] = [read_latent(comfy, entry, i) for i in saved]
    log = comfy.log(400_000)
    assert "Ovi LoRA: 9 layers patched (video tower 9, audio tower 0) from 27 keys" in log
    assert "Ovi LoRA: none of the file's 6 keys matches a layer of the Ovi model (6 unmatched)" in log
    assert all(not torch.equal(a, b) for a, b in zip(runs["wan"], runs["none"]))  # the LoRA acts in sampling
    assert all(torch.equal(a, b) for a, b in zip(runs["other"], runs["none"]))  # another model's LoRA: no change


# ---- the real-weight extend workflow -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [REAL_EXTEND, REAL_LORA], ids=lambda p: p.stem)
def test_real_workflow_is_refused_only_for_its_missing_files(comfy, info, path):
    workflow = json.loads(path.read_text())
    note = " ".join(str(n.get("widgets_values")) for n in workflow["nodes"] if n["type"] in FRONTEND_ONLY)
    status, answer = comfy.queue(to_api(workflow, info))
    assert status == 400, answer
    for node_id, errors in answer["node_errors"].items():
        for error in errors["errors"]:
            name = error.get("extra_info", {}).get("input_name")
            assert error["type"] == "value_not_in_list" and name in FILE_INPUTS | {"lora_name"}, (node_id, error)
            assert error["extra_info"]["received_value"] in note


def test_real_extend_workflow_on_the_demo_models_makes_seven_windows(comfy, info):
    from ovi_core.mux import probe_mp4

    prompt = on_demo_models(to_api(json.loads(REAL_EXTEND.read_text()), info))
    assert len(ids_of(prompt, "SamplerCustomAdvanced")) == 7 and len(ids_of(prompt, "OviTextEncode")) == 7
    texts = {prompt[i]["inputs"]["prompt"] for i in ids_of(prompt, "OviTextEncode")}
    assert len(texts) == 7  # a prompt per window
    mux = one(prompt, "OviMux")
    entry = run_ok(comfy, prompt, timeout=900)
    (item,) = entry["outputs"][mux]["images"]
    clip = probe_mp4(comfy.output_dir / item["subfolder"] / item["filename"])
    assert (clip.num_frames, clip.width, clip.height) == (FRAMES + 6 * ADVANCE, 64, 64) == (697, 64, 64)
    assert abs(clip.audio_duration - clip.num_frames / 24) < 1 / 24


def test_real_lora_workflow_on_the_demo_models(comfy, info):
    from ovi_core.demo import build_demo_fusion
    from ovi_core.mux import probe_mp4

    sd = build_demo_fusion().state_dict()
    layers = {f"diffusion_model.blocks.{i}.self_attn.{p}": tuple(sd[f"video_model.blocks.{i}.self_attn.{p}.weight"].shape)
              for i in range(3) for p in "qkvo"}
    _write_lora(comfy.root / "ComfyUI" / "models" / "loras" / "ovi_test_wan_blocks.safetensors", layers, 3)
    prompt = on_demo_models(to_api(json.loads(REAL_LORA.read_text()), info))
    prompt[one(prompt, "LoraLoaderModelOnly")]["inputs"]["lora_name"] = "ovi_test_wan_blocks.safetensors"
    mux = one(prompt, "OviMux")
    entry = run_ok(comfy, prompt, timeout=600)
    (item,) = entry["outputs"][mux]["images"]
    assert probe_mp4(comfy.output_dir / item["subfolder"] / item["filename"]).num_frames == FRAMES
    assert "Ovi LoRA: 12 layers patched (video tower 12, audio tower 0) from 36 keys" in comfy.log(400_000)
