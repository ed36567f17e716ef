"""Ovi's native path inside a real ComfyUI 0.8 server (CPU, 127.0.0.1), driven through its HTTP API.

The session's one server (tests/conftest.py's ``comfy``; tests/comfy_server.py: ComfyUI's venv, a copy of its tree,
this repository linked as custom_nodes/ComfyUI-Ovi). Workflows are turned into API prompts with the server's own
/object_info (widget order of core and Ovi nodes alike). Checked on the demo model:
  * the native demo workflow runs through core SamplerCustomAdvanced + Ovi Guider, and through core KSampler, each
    writing an mp4 with one video and one audio stream of equal length;
  * SamplerCustomAdvanced + Ovi Guider + core euler (KSamplerSelect) + Ovi Scheduler(euler) + Ovi Noise gives the
    final video and audio latents of the pack's Ovi Sampler (solver euler, same seed and settings) to 1e-5, and
    Ovi Sampler Select(unipc) those of Ovi Sampler(unipc); core uni_pc's difference from the exact unipc is printed;
  * a zero noise mask on the video (core LTXVSeparateAVLatent, SetLatentNoiseMask, LTXVConcatAVLatent) keeps it bit
    for bit while the audio is generated anew;
  * further runs with other seeds work without the server's memory (VmRSS) growing; two-stage sampling with Ovi
    Noise off in the second stage equals one stage; the real-weight native workflows validate (but for their files)
    and run on the demo models; /interrupt stops a native run; bad inputs get Ovi's messages.
Latents leave the server through core SaveLatent (safetensors, float32: bit-exact).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tests import comfy_server as cs

ROOT = Path(__file__).resolve().parent.parent
DEMO_NATIVE = ROOT / "workflows" / "ovi_demo_native_tiny_model.json"
DEMO_EXACT = ROOT / "workflows" / "ovi_demo_tiny_model.json"  # the reference-exact graph (Ovi Sampler)
NATIVE_IDS = ("OviEmptyLatent", "OviGuider", "OviScheduler", "OviSamplerSelect", "OviNoise")
FRONTEND_ONLY = ("MarkdownNote", "Note", "Reroute", "PrimitiveNode")
SEED, STEPS, TOL = 321, 8, 1e-5
FRAME = 1 / 24
RSS_GROWTH_MB = 40  # allowed VmRSS growth from the 2nd to the 5th run (the tiny model: noise of the allocator)


# ---- UI workflow -> API prompt, with the server's definitions --------------------------------------------------------
def _widget_names(definition: dict) -> list[str | None]:
    """The widgets_values layout the frontend saves: input names, None for the UI-only extras (the control value
    after a seed, LoadImage's upload value)."""
    names = []
    for section in ("required", "optional"):
        for name in definition["input_order"].get(section, []):
            spec = definition["input"][section][name]
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")) \
                    or opts.get("forceInput"):
                continue
            names.append(name)
            if kind == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
                names.append(None)
            if section == "required" and opts.get("image_upload"):
                names.append(None)
    return names


def to_api(workflow: dict, info: dict) -> dict:
    """UI format -> POST /prompt's {"id": {"class_type", "inputs"}} (what the frontend's graphToPrompt sends)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        assert node["type"] in info, f"{node['type']} is not registered in the server"
        values = zip(_widget_names(info[node["type"]]), node.get("widgets_values") or [])
        inputs = {name: v for name, v in values if name is not None}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, src, slot, *_ = links[socket["link"]]
                inputs[(socket.get("widget") or {}).get("name", socket["name"])] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def ids_of(prompt: dict, class_type: str) -> list[str]:
    return [i for i, n in prompt.items() if n["class_type"] == class_type]


def one(prompt: dict, class_type: str) -> str:
    (node_id,) = ids_of(prompt, class_type)
    return node_id


def add(prompt: dict, class_type: str, **inputs) -> str:
    node_id = str(900 + len([i for i in prompt if int(i) >= 900]))
    prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return node_id


def native_demo(info: dict) -> dict:
    return to_api(json.loads(DEMO_NATIVE.read_text()), info)


def run_ok(server, prompt: dict, timeout: float = 300) -> dict:
    status, answer = server.queue(prompt)
    assert status == 200 and not answer["node_errors"], json.dumps(answer)[:3000]
    entry = server.wait(answer["prompt_id"], timeout)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + server.log(3000)
    return entry


# ---- latents out of the server ---------------------------------------------------------------------------------------
def save_parts(prompt: dict, av_latent: list, name: str) -> tuple[str, str]:
    """LTXVSeparateAVLatent + two SaveLatent nodes on a joint LATENT output; the SaveLatent ids (video, audio)."""
    sep = add(prompt, "LTXVSeparateAVLatent", av_latent=av_latent)
    return (add(prompt, "SaveLatent", samples=[sep, 0], filename_prefix=f"native_test/{name}_video"),
            add(prompt, "SaveLatent", samples=[sep, 1], filename_prefix=f"native_test/{name}_audio"))


def read_latent(server, entry: dict, node_id: str) -> torch.Tensor:
    from safetensors.torch import load_file

    (item,) = entry["outputs"][node_id]["latents"]
    return load_file(str(server.output_dir / item["subfolder"] / item["filename"]))["latent_tensor"]


def model_space(video_raw: torch.Tensor) -> torch.Tensor:
    """ComfyUI's raw Wan2.2 video latent -> the normalised latent Ovi's sampler works on."""
    from ovi_core.wan_vae import WAN22_LATENT_MEAN, WAN22_LATENT_STD

    mean = torch.tensor(WAN22_LATENT_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN22_LATENT_STD).view(1, -1, 1, 1, 1)
    return (video_raw.float() - mean) / std


def native_branch(prompt: dict, sca: dict, *, solver: str, core_sampler: str | None, name: str,
                  steps: int = STEPS) -> tuple[str, str]:
    """Another SamplerCustomAdvanced on the noise, guider and latent of ``sca`` (the native demo's inputs), with Ovi
    Scheduler(solver) and core KSamplerSelect(core_sampler) or Ovi Sampler Select(solver); its SaveLatent ids."""
    sigmas = add(prompt, "OviScheduler", solver=solver, steps=steps, shift=5.0)
    sampler = (add(prompt, "KSamplerSelect", sampler_name=core_sampler) if core_sampler
               else add(prompt, "OviSamplerSelect", solver=solver))
    branch = add(prompt, "SamplerCustomAdvanced", noise=sca["noise"], guider=sca["guider"], sampler=[sampler, 0],
                 sigmas=[sigmas, 0], latent_image=sca["latent_image"])
    return save_parts(prompt, [branch, 0], name)


def exact_branches(info: dict, runs: list[tuple[str, int]]) -> tuple[dict, dict]:
    """The reference-exact demo graph (Ovi Sampler) once per (solver, steps) at the native demo's other settings;
    {(solver, steps): SaveLatent ids}."""
    exact = to_api(json.loads(DEMO_EXACT.read_text()), info)
    sampler_id = one(exact, "OviSampler")
    base = exact[sampler_id]["inputs"]
    base.update(seed=SEED, steps=STEPS, shift=5.0, video_guidance=4.0, audio_guidance=3.0, slg_layer=1, width=64,
                height=64)
    names = info["OviSampler"]["output_name"]
    saved = {}
    for k, (solver, steps) in enumerate(runs):
        node_id = sampler_id if k == 0 else add(exact, "OviSampler", **copy.deepcopy(base))
        exact[node_id]["inputs"].update(solver=solver, steps=steps)
        if "video_latent" in names and "audio_latent" in names:
            saved[solver, steps] = tuple(add(exact, "SaveLatent", samples=[node_id, names.index(part)],
                                             filename_prefix=f"native_test/exact_{solver}_{steps}_{part}")
                                         for part in ("video_latent", "audio_latent"))
        else:  # one joint LATENT output
            saved[solver, steps] = save_parts(exact, [node_id, info["OviSampler"]["output"].index("LATENT")],
                                              f"exact_{solver}_{steps}")
    return exact, saved


def merged(a: dict, b: dict) -> dict:
    """Two API prompts as one (b's ids shifted past a's)."""
    shift = max(int(i) for i in a) + 1000
    out = copy.deepcopy(a)
    for node_id, node in b.items():
        node = copy.deepcopy(node)
        for name, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                node["inputs"][name] = [str(int(v[0]) + shift), v[1]]
        out[str(int(node_id) + shift)] = node
    return out


def shifted(ids: tuple[str, str], prompt_a: dict) -> tuple[str, str]:
    shift = max(int(i) for i in prompt_a) + 1000
    return tuple(str(int(i) + shift) for i in ids)


# ---- checks --------------------------------------------------------------------------------------------------------
def test_native_nodes_are_registered_with_tooltips(comfy, info):
    for node_id in NATIVE_IDS:
        assert node_id in info, f"{node_id} missing from /object_info"
        entry = info[node_id]
        assert entry["python_module"] == f"custom_nodes.{cs.PACK_DIR_NAME}"
        assert entry["category"].startswith("Ovi/") and entry["description"]
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert (spec[1] if len(spec) > 1 else {}).get("tooltip"), f"{node_id}.{name} has no tooltip"
    log = comfy.log(200_000)
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-3000:]


def _check_mp4(server, entry: dict, mux_id: str, prefix: str):
    from ovi_core.mux import probe_mp4

    (item,) = entry["outputs"][mux_id]["images"]
    assert item["filename"].startswith(prefix)
    clip = probe_mp4(server.output_dir / item["subfolder"] / item["filename"])
    assert (clip.video_streams, clip.audio_streams, clip.num_frames, clip.width, clip.height) == (1, 1, 121, 64, 64)
    assert abs(clip.audio_duration - clip.video_duration) < FRAME, (clip.audio_duration, clip.video_duration)
    return clip


def test_demo_native_workflow_runs_through_sampler_custom_advanced_and_ovi_guider(comfy, info):
    prompt = native_demo(info)
    assert {"SamplerCustomAdvanced", "OviGuider", "OviEmptyLatent", "LTXVSeparateAVLatent"} <= \
        {n["class_type"] for n in prompt.values()}
    mux = one(prompt, "OviMux")
    prompt[mux]["inputs"]["filename_prefix"] = "Ovi/native_sca"
    _check_mp4(comfy, run_ok(comfy, prompt), mux, "native_sca_")


def test_demo_native_workflow_runs_through_core_ksampler(comfy, info):
    """The same graph with a stock KSampler (euler, normal, cfg 4) in place of SamplerCustomAdvanced + Ovi Guider."""
    prompt = native_demo(info)
    sca_id, guider = one(prompt, "SamplerCustomAdvanced"), prompt[one(prompt, "OviGuider")]["inputs"]
    ks = add(prompt, "KSampler", model=guider["model"], seed=SEED, steps=STEPS, cfg=4.0, sampler_name="euler",
             scheduler="normal", positive=guider["positive"], negative=guider["negative"],
             latent_image=prompt[sca_id]["inputs"]["latent_image"], denoise=1.0)
    for node_type in ("SamplerCustomAdvanced", "OviGuider", "OviNoise", "OviScheduler", "OviSamplerSelect"):
        del prompt[one(prompt, node_type)]
    prompt[one(prompt, "LTXVSeparateAVLatent")]["inputs"]["av_latent"] = [ks, 0]
    mux = one(prompt, "OviMux")
    prompt[mux]["inputs"]["filename_prefix"] = "Ovi/native_ksampler"
    _check_mp4(comfy, run_ok(comfy, prompt), mux, "native_ksampler_")


def test_native_euler_equals_ovi_sampler_euler_and_uni_pc_is_reported(comfy, info):
    """Item 5: SamplerCustomAdvanced + Ovi Guider + core euler + Ovi Scheduler(euler) == Ovi Sampler(euler) to 1e-5
    (video in Ovi's normalised space, audio as is); Ovi Sampler Select(unipc) == Ovi Sampler(unipc); core uni_pc on
    Ovi's unipc σ list is another solver: its difference is printed."""
    native = native_demo(info)
    native[one(native, "OviNoise")]["inputs"]["seed"] = SEED
    text_inputs = native[one(native, "OviTextEncode")]["inputs"]
    sca_id = one(native, "SamplerCustomAdvanced")
    sca = native.pop(sca_id)["inputs"]  # replaced by one branch per solver; only latents are compared here
    for node_type in ("LTXVSeparateAVLatent", "OviVideoDecode", "OviAudioDecode", "OviMux", "SaveVideo"):
        for node_id in ids_of(native, node_type):
            del native[node_id]
    native_ids = {"euler": native_branch(native, sca, solver="euler", core_sampler="euler", name="native_euler"),
                  "unipc": native_branch(native, sca, solver="unipc", core_sampler=None, name="native_unipc"),
                  "uni_pc": native_branch(native, sca, solver="unipc", core_sampler="uni_pc",
                                          name="native_core_uni_pc"),
                  "uni_pc_50": native_branch(native, sca, solver="unipc", core_sampler="uni_pc", steps=50,
                                             name="native_core_uni_pc_50")}
    exact, exact_ids = exact_branches(info, [("euler", STEPS), ("unipc", STEPS), ("unipc", 50)])
    exact_text = exact[one(exact, "OviTextEncode")]["inputs"]
    for name in ("prompt", "video_negative", "audio_negative"):  # the same text for both paths
        exact_text[name] = text_inputs[name]
    for node_type in ("OviMux", "SaveVideo", "OviVideoDecode", "OviAudioDecode", "CreateVideo"):
        for node_id in ids_of(exact, node_type):
            del exact[node_id]
    entry = run_ok(comfy, merged(native, exact))

    def parts(ids, from_exact=False):
        video, audio = (read_latent(comfy, entry, i) for i in (shifted(ids, native) if from_exact else ids))
        return model_space(video), audio.float()

    ref = {run: parts(ids, True) for run, ids in exact_ids.items()}
    errors = {}
    for name, run in (("euler", ("euler", STEPS)), ("unipc", ("unipc", STEPS)), ("uni_pc", ("unipc", STEPS)),
                      ("uni_pc_50", ("unipc", 50))):
        (v, a), (rv, ra) = parts(native_ids[name]), ref[run]
        assert v.shape == rv.shape == (1, 48, 31, 4, 4) and a.shape == ra.shape == (1, 20, 157)
        errors[name] = ((v - rv).abs().max().item(), (a - ra).abs().max().item(),
                        ((v - rv).abs().max() / rv.abs().max()).item(), ((a - ra).abs().max() / ra.abs().max()).item())
    for name, (ev, ea, rv_, ra_) in errors.items():
        print(f"{name}: max |native - exact| video {ev:.3g} (relative {rv_:.3g}), audio {ea:.3g} (relative {ra_:.3g})")
    assert errors["euler"][0] < TOL and errors["euler"][1] < TOL
    assert errors["unipc"][0] < TOL and errors["unipc"][1] < TOL
    assert errors["uni_pc"][0] > 1e-4 and errors["uni_pc_50"][0] > 1e-4  # core uni_pc is another UniPC


def test_zero_video_mask_keeps_the_video_bit_for_bit(comfy, info):
    """Item 6, with core nodes only: the joint latent of a first generation split (LTXVSeparateAVLatent), its video
    part given a zero noise mask (SolidMask 0 + SetLatentNoiseMask), joined again (LTXVConcatAVLatent: nested masks,
    the audio's all ones): the second sampling (another seed) returns the video bit for bit and generates the audio
    anew with that video in view. (SetLatentNoiseMask straight on the joint latent also keeps the video, but its
    one-tensor mask then breaks LTXVSeparateAVLatent downstream: it expects a nested mask.)"""
    prompt = native_demo(info)
    for node_type in ("OviMux", "SaveVideo"):
        for node_id in ids_of(prompt, node_type):
            del prompt[node_id]
    sca_id = one(prompt, "SamplerCustomAdvanced")
    first = save_parts(prompt, [sca_id, 0], "mask_first")
    parts = add(prompt, "LTXVSeparateAVLatent", av_latent=[sca_id, 0])
    mask = add(prompt, "SolidMask", value=0.0, width=64, height=64)
    video_kept = add(prompt, "SetLatentNoiseMask", samples=[parts, 0], mask=[mask, 0])
    masked = add(prompt, "LTXVConcatAVLatent", video_latent=[video_kept, 0], audio_latent=[parts, 1])
    noise = add(prompt, "OviNoise", seed=SEED + 1, add_noise=True)
    sca = prompt[sca_id]["inputs"]
    second = add(prompt, "SamplerCustomAdvanced", noise=[noise, 0], guider=sca["guider"], sampler=sca["sampler"],
                 sigmas=sca["sigmas"], latent_image=[masked, 0])
    kept = save_parts(prompt, [second, 0], "mask_second")
    entry = run_ok(comfy, prompt)
    video_in, audio_in = (read_latent(comfy, entry, i) for i in first)
    video_out, audio_out = (read_latent(comfy, entry, i) for i in kept)
    assert torch.equal(video_out, video_in)
    assert torch.isfinite(audio_out).all() and (audio_out - audio_in).abs().max() > 1e-3
    print(f"video kept bit for bit; audio regenerated (max change {(audio_out - audio_in).abs().max():.3g})")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_runs_with_other_seeds_do_not_grow_memory(comfy, info):
    if not Path(f"/proc/{comfy.proc.pid}/status").exists():
        pytest.skip("no /proc: cannot read the server's resident memory")
    rss = []
    for k in range(5):
        prompt = native_demo(info)
        prompt[one(prompt, "OviNoise")]["inputs"]["seed"] = 1000 + k
        mux = one(prompt, "OviMux")
        prompt[mux]["inputs"]["filename_prefix"] = f"Ovi/native_seed_{k}"
        _check_mp4(comfy, run_ok(comfy, prompt), mux, f"native_seed_{k}_")
        rss.append(_rss_mb(comfy.proc.pid))
    print("server VmRSS after each run (MB): " + ", ".join(f"{r:.1f}" for r in rss))
    assert rss[-1] - rss[1] < RSS_GROWTH_MB, rss


# ---- the real-weight native workflows ----------------------------------------------------------------------------------
REAL_NATIVE = sorted(p for p in (ROOT / "workflows").glob("ovi_native_*.json"))
FILE_INPUTS = {"model_name", "text_encoder_name", "vae_name", "vocoder_name", "image"}


def test_the_native_workflows_are_shipped():
    names = {p.name for p in REAL_NATIVE}
    assert {"ovi_native_t2av_720x720_5s.json", "ovi_native_ksampler_t2av_720x720_5s.json",
            "ovi_native_i2av_720x720_5s.json"} <= names and DEMO_NATIVE.is_file()


@pytest.mark.parametrize("path", REAL_NATIVE, ids=[p.stem for p in REAL_NATIVE])
def test_real_native_workflow_is_refused_only_for_its_missing_files(comfy, info, path):
    """The server's own validation of the graph as shipped: the one complaint allowed is a model or image file that
    this test server does not have (each named in the workflow's note)."""
    workflow = json.loads(path.read_text())
    note = " ".join(str(n.get("widgets_values")) for n in workflow["nodes"] if n["type"] in FRONTEND_ONLY)
    status, answer = comfy.queue(to_api(workflow, info))
    assert status == 400, f"{path.name} was accepted by a server without its model files: {answer}"
    for node_id, errors in answer["node_errors"].items():
        for error in errors["errors"]:
            name = error.get("extra_info", {}).get("input_name")
            if name == "image":  # LoadImage checks its file itself
                assert error["type"] == "custom_validation_failed" and "Invalid image file" in error["details"]
                continue
            assert error["type"] == "value_not_in_list" and name in FILE_INPUTS, (path.name, node_id, error)
            value = error["extra_info"]["received_value"]
            assert value in note, f"{value} is not named in {path.name}'s note"


def on_demo_models(prompt: dict) -> dict:
    """A real-weight native prompt on the demo models: Ovi loaders on the demo entry, core VAELoader + VAEDecode
    replaced by Ovi's demo video decoder, 64x64, 2 steps, skip layer 1 (the demo model has 3 blocks)."""
    demo = "(demo) tiny built-in model"
    for node in prompt.values():
        inputs = node["inputs"]
        for name in ("model_name", "text_encoder_name", "vocoder_name") + (("vae_name",) if node["class_type"]
                                                                             .startswith("Ovi") else ()):
            if name in inputs:
                inputs[name] = demo
        if node["class_type"] == "OviEmptyLatent":
            inputs.update(width=64, height=64)
        if node["class_type"] in ("OviScheduler", "KSampler"):
            inputs["steps"] = 2
        if node["class_type"] == "OviGuider":
            inputs["skip_layer"] = 1
    for decode_id in ids_of(prompt, "VAEDecode"):
        vae = add(prompt, "OviVideoVAELoader", vae_name=demo, precision="auto")
        samples = prompt.pop(decode_id)["inputs"]["samples"]
        prompt[decode_id] = {"class_type": "OviVideoDecode", "inputs": {
            "video_vae": [vae, 0], "video_latent": samples, "tiled": False, "tile_size": 512}}
    for loader_id in ids_of(prompt, "VAELoader"):
        del prompt[loader_id]
    return prompt


@pytest.mark.parametrize("name", ["ovi_native_t2av_720x720_5s.json", "ovi_native_ksampler_t2av_720x720_5s.json"])
def test_real_native_text_to_av_workflow_runs_on_the_demo_models(comfy, info, name):
    prompt = on_demo_models(to_api(json.loads((ROOT / "workflows" / name).read_text()), info))
    mux = one(prompt, "OviMux")
    prompt[mux]["inputs"]["filename_prefix"] = f"Ovi/demo_{Path(name).stem}"
    _check_mp4(comfy, run_ok(comfy, prompt), mux, f"demo_{Path(name).stem}_")


# ---- interrupt -----------------------------------------------------------------------------------------------------
def test_interrupt_stops_a_long_native_run_and_the_next_run_works(comfy, info):
    """/interrupt during a 1000-step SamplerCustomAdvanced run (Ovi's exact unipc) stops it within 2 s."""
    prompt = native_demo(info)
    prompt[one(prompt, "OviScheduler")]["inputs"]["steps"] = 1000
    prompt[one(prompt, "OviNoise")]["inputs"]["seed"] = 4242
    sca = one(prompt, "SamplerCustomAdvanced")
    before = cs.files_under(comfy.output_dir)
    pid, stopped, latency = comfy.queue_and_interrupt(prompt, sca)
    assert stopped["type"] == "execution_interrupted", stopped
    assert stopped["data"]["node_type"] == "SamplerCustomAdvanced"
    print(f"native interrupt latency {latency:.3f} s")
    assert latency < 2.0
    comfy.wait(pid, timeout=10)
    assert cs.files_under(comfy.output_dir) == before
    prompt = native_demo(info)
    prompt[one(prompt, "OviNoise")]["inputs"]["seed"] = 4243
    mux = one(prompt, "OviMux")
    prompt[mux]["inputs"]["filename_prefix"] = "Ovi/native_after_interrupt"
    _check_mp4(comfy, run_ok(comfy, prompt), mux, "native_after_interrupt_")


# ---- bad inputs to the native nodes ----------------------------------------------------------------------------------
def _set(node_type: str, **values):
    def change(prompt):
        prompt[one(prompt, node_type)]["inputs"].update(values)
    return change


def _ovi_sampler_on_euler_sigmas(prompt):
    prompt[one(prompt, "OviScheduler")]["inputs"]["solver"] = "euler"  # Ovi Sampler Select stays on unipc


def _image_latent(prompt):
    latent = add(prompt, "EmptyLatentImage", width=64, height=64, batch_size=1)
    prompt[one(prompt, "SamplerCustomAdvanced")]["inputs"]["latent_image"] = [latent, 0]


V, X = "validation", "execution"
NATIVE_CASES = [  # (name, change, where, node type, words)
    ("length_7_seconds", _set("OviEmptyLatent", length=7), V, "OviEmptyLatent", ["length 7", "5 s (121 frames)"]),
    ("length_0", _set("OviEmptyLatent", length=0), V, "OviEmptyLatent", ["length 0", "10 s (241 frames)"]),
    ("width_720", _set("OviEmptyLatent", width=720), V, "OviEmptyLatent", ["width 720", "704 or 736"]),
    ("size_4096", _set("OviEmptyLatent", width=4096, height=4096), V, "OviEmptyLatent", ["4096x4096", "too large"]),
    ("skip_layer_past_the_demo_depth", _set("OviGuider", skip_layer=11), X, "OviGuider",
     ["skip_layer 11", "3 fused blocks"]),
    ("video_cfg_nan", _set("OviGuider", video_cfg=float("nan")), X, "OviGuider", ["video_cfg", "finite"]),
    ("shift_nan", _set("OviScheduler", shift=float("nan")), X, "OviScheduler", ["shift", "finite"]),
    ("solver_unknown", _set("OviSamplerSelect", solver="ddim"), V, "OviSamplerSelect", ["not in list", "ddim"]),
    ("ovi_unipc_on_euler_sigmas", _ovi_sampler_on_euler_sigmas, X, "SamplerCustomAdvanced",
     ["unipc", "Ovi Scheduler", "other sigmas"]),
    ("image_latent_instead_of_the_joint_one", _image_latent, X, "SamplerCustomAdvanced",
     ["joint audio+video LATENT", "Ovi Empty Latent"]),
]


@pytest.mark.parametrize("name, change, where, node, words", NATIVE_CASES, ids=[c[0] for c in NATIVE_CASES])
def test_bad_native_inputs_are_refused_clearly_and_write_nothing(comfy, info, name, change, where, node, words):
    prompt = native_demo(info)
    change(prompt)
    before = cs.files_under(comfy.output_dir)
    status, answer = comfy.queue(prompt)
    if where == V:
        assert status == 400, f"accepted: {answer}"
        errors = answer["node_errors"].get(one(prompt, node), {}).get("errors", [])
        assert len(errors) == 1, errors
        text = f"{errors[0].get('message', '')}: {errors[0].get('details', '')}"
    else:
        assert status == 200 and not answer["node_errors"], answer
        entry = comfy.wait(answer["prompt_id"], timeout=120)
        assert entry["status"]["status_str"] == "error", entry["status"]
        (error,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
        assert error["node_type"] == node and error["exception_type"].startswith("ovi_core.errors."), error
        text = error["exception_message"]
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in {text!r}"
    assert cs.files_under(comfy.output_dir) == before


def test_two_stage_sampling_with_ovi_noise_off_equals_one_stage(comfy, info):
    """Ovi Noise with add_noise off as the second stage's noise (core DisableNoise makes video-shaped zeros for a joint
    latent, which fails): euler over Ovi's σ list split at step 4 (core SplitSigmas) == one euler run, to 1e-5."""
    prompt = native_demo(info)
    for node_type in ("LTXVSeparateAVLatent", "OviVideoDecode", "OviAudioDecode", "OviMux", "SaveVideo"):
        for node_id in ids_of(prompt, node_type):
            del prompt[node_id]
    sca_id = one(prompt, "SamplerCustomAdvanced")
    sca = prompt[sca_id]["inputs"]
    prompt[one(prompt, "OviNoise")]["inputs"]["seed"] = SEED + 2
    sigmas = add(prompt, "OviScheduler", solver="euler", steps=STEPS, shift=5.0)
    euler = add(prompt, "KSamplerSelect", sampler_name="euler")
    sca.update(sampler=[euler, 0], sigmas=[sigmas, 0])
    whole = save_parts(prompt, [sca_id, 0], "one_stage")
    split = add(prompt, "SplitSigmas", sigmas=[sigmas, 0], step=4)
    first = add(prompt, "SamplerCustomAdvanced", noise=sca["noise"], guider=sca["guider"], sampler=[euler, 0],
                sigmas=[split, 0], latent_image=sca["latent_image"])
    no_noise = add(prompt, "OviNoise", seed=0, add_noise=False)
    second = add(prompt, "SamplerCustomAdvanced", noise=[no_noise, 0], guider=sca["guider"], sampler=[euler, 0],
                 sigmas=[split, 1], latent_image=[first, 0])
    staged = save_parts(prompt, [second, 0], "two_stage")
    entry = run_ok(comfy, prompt)
    (v1, a1), (v2, a2) = ([read_latent(comfy, entry, i) for i in ids] for ids in (whole, staged))
    err_v, err_a = (model_space(v2) - model_space(v1)).abs().max().item(), (a2 - a1).abs().max().item()
    print(f"two stages vs one: video {err_v:.3g}, audio {err_a:.3g}")
    assert err_v < TOL and err_a < TOL and model_space(v1).abs().max() > 0.1
