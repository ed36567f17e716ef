"""Every shipped workflow (workflows/*.json, ComfyUI's UI format) checked against the node definitions, then run.

Checks: node types are ours or listed core nodes; every link joins an output and an input of the same type; every
required socket is connected; widgets_values follow the frontend's order (incl. the "control after generate" value
after a seed and LoadImage's upload value) and are valid for their inputs; model files are the released names;
prompts are written in the caption form of their variant.
Run: the whole graph is executed without ComfyUI — our node classes as they are, on the built-in tiny models, and
the few core nodes by small stand-ins with core's semantics. The demo workflow runs exactly as shipped; the others
run with the demo entry in every loader, a short clip and 2 steps.
Workflows of the native path (Ovi Guider, Ovi Empty Latent, ... with core samplers) need ComfyUI itself: they are
skipped here and run in a real server by tests/test_comfy_native.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

import nodes
from nodes import bridge
from nodes.bridge import DEMO_ENTRY

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
OURS = nodes.NODE_CLASS_MAPPINGS
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("MarkdownNote", "Note")
# The native-path nodes (nodes/native_nodes.py): served only inside ComfyUI.
NATIVE_NODE_IDS = {"OviEmptyLatent", "OviGuider", "OviScheduler", "OviSamplerSelect", "OviNoise"}

# Core nodes a workflow may use: inputs in order (name -> spec as in /object_info of ComfyUI 0.8), outputs.
CORE_NODES = {
    "LoadImage": ({"required": {"image": (["example.png"], {"image_upload": True})}}, ("IMAGE", "MASK")),
    "ImageFromBatch": ({"required": {"image": ("IMAGE",), "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                                     "length": ("INT", {"default": 1, "min": 1, "max": 4096})}}, ("IMAGE",)),
    "ImageBatch": ({"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}, ("IMAGE",)),
    "TrimAudioDuration": ({"required": {"audio": ("AUDIO",), "start_index": ("FLOAT", {"default": 0.0}),
                                        "duration": ("FLOAT", {"default": 60.0, "min": 0.0})}}, ("AUDIO",)),
    "AudioConcat": ({"required": {"audio1": ("AUDIO",), "audio2": ("AUDIO",),
                                  "direction": (["after", "before"], {})}}, ("AUDIO",)),
    "CLIPLoader": ({"required": {"clip_name": (["umt5_xxl_fp16.safetensors"], {}), "type": (
        ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2",
         "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis"], {})},
        "optional": {"device": (["default", "cpu"], {})}}, ("CLIP",)),
    "CLIPTextEncode": ({"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}, ("CONDITIONING",)),
    "SaveVideo": ({"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {}),
                                "format": (["auto", "mp4"], {}), "codec": (["auto", "h264"], {})}}, ()),
    "CreateVideo": ({"required": {"images": ("IMAGE",), "fps": ("FLOAT", {"min": 1.0, "max": 120.0})},
                     "optional": {"audio": ("AUDIO",)}}, ("VIDEO",)),
    "PreviewImage": ({"required": {"images": ("IMAGE",)}}, ()),
    "PreviewAudio": ({"required": {"audio": ("AUDIO",)}}, ()),
    "SaveAudio": ({"required": {"audio": ("AUDIO",), "filename_prefix": ("STRING", {})}}, ()),
}
# The file names the released weights come with (what the real-weight workflows must name).
RELEASED_FILES = {
    ("OviModelLoader", "model_name"): {"model.safetensors", "model_960x960.safetensors",
                                       "model_960x960_10s.safetensors", "model_fp8_e4m3fn.safetensors"},
    ("OviTextEncoderLoader", "text_encoder_name"): {"umt5_xxl_fp16.safetensors", "models_t5_umt5-xxl-enc-bf16.pth",
                                                    "umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
    ("CLIPLoader", "clip_name"): {"umt5_xxl_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
    ("OviVideoVAELoader", "vae_name"): {"wan2.2_vae.safetensors", "Wan2.2_VAE.pth"},
    ("OviAudioVAELoader", "vae_name"): {"v1-16.pth"},
    ("OviAudioVAELoader", "vocoder_name"): {"best_netG.pt"},
}
SHORT_LATENTS = (3, 11)  # video, audio latents of the short clip the real-weight workflows run with
SHORT_FRAMES = 1 + 4 * (SHORT_LATENTS[0] - 1)



# ---- definitions -------------------------------------------------------------------------------------------------
def definition(node_type: str) -> tuple[dict, tuple]:
    """(INPUT_TYPES, output types) of one of our nodes or a listed core node."""
    if node_type in OURS:
        cls = OURS[node_type]
        return cls.INPUT_TYPES(), tuple(cls.RETURN_TYPES)
    return CORE_NODES[node_type]


def ordered_inputs(node_type: str) -> list[tuple[str, tuple, bool]]:
    """(name, spec, required) in the order ComfyUI reports them (required first, then optional)."""
    spec, _ = definition(node_type)
    return [(n, s, sec == "required") for sec in ("required", "optional") for n, s in spec.get(sec, {}).items()]


def input_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def combo_options(spec) -> list:
    """A combo's options: V1 lists them as the type, V3 ("COMBO", {"options": [...]})."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def validator(node_type: str):
    """A node's own validate_inputs (V3; V1's VALIDATE_INPUTS), or None."""
    cls = OURS.get(node_type)
    return getattr(cls, "validate_inputs", None) if cls is not None and "validate_inputs" in vars(cls) else None


def call_node(cls, **kwargs):
    """A V3 node's execute: the outputs tuple, or {"ui", "result"} (as V1 nodes returned)."""
    out = cls.execute(**kwargs)
    return tuple(out.args) if out.ui is None else {"ui": out.ui, "result": tuple(out.args)}


def is_native(wf: dict) -> bool:
    return any(n["type"] in NATIVE_NODE_IDS for n in wf["nodes"])


def skip_native(wf: dict) -> None:
    if is_native(wf) and not NATIVE_NODE_IDS <= set(OURS):
        pytest.skip("a native-path workflow (core samplers + Ovi's native nodes): needs ComfyUI, run by "
                    "tests/test_comfy_native.py")


def is_widget(spec) -> bool:
    opts = spec[1] if len(spec) > 1 else {}
    return (input_type(spec) in WIDGET_TYPES or input_type(spec) == "COMBO") and not opts.get("forceInput")


def widget_slots(node_type: str) -> list[tuple[str, str]]:
    """The widgets_values layout the frontend saves: (input name, "value" | "control" | "upload")."""
    if node_type in FRONTEND_ONLY:
        return [("text", "value")]
    slots = []
    inputs = ordered_inputs(node_type)
    for name, spec, required in inputs:
        if not is_widget(spec):
            continue
        slots.append((name, "value"))
        opts = spec[1] if len(spec) > 1 else {}
        if input_type(spec) == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
            slots.append((name, "control"))
        if required and opts.get("image_upload"):
            slots.append((name, "upload"))
    return slots


# ---- loading and converting --------------------------------------------------------------------------------------
def load(path: Path) -> dict:
    return json.loads(path.read_text())


def links_of(wf: dict) -> dict[int, tuple]:
    return {link[0]: tuple(link[1:]) for link in wf["links"]}  # id -> (src, src_slot, dst, dst_slot, type)


def to_prompt(wf: dict) -> dict[int, dict]:
    """UI format -> {node id: {"class_type", "inputs": {name: value | ("link", src, slot)}}} (as graphToPrompt)."""
    links = links_of(wf)
    prompt = {}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        values = dict(zip(widget_slots(node["type"]), node.get("widgets_values") or []))
        inputs = {name: v for (name, kind), v in values.items() if kind == "value"}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                src, slot, *_ = links[socket["link"]]
                name = (socket.get("widget") or {}).get("name", socket["name"])
                inputs[name] = ("link", src, slot)
        prompt[node["id"]] = {"class_type": node["type"], "inputs": inputs}
    return prompt


# ---- static checks -------------------------------------------------------------------------------------------------
def test_the_shipped_workflows():
    names = {p.name for p in WORKFLOWS}
    assert {"ovi_t2av_720x720_5s.json", "ovi_t2av_960x960_10s.json", "ovi_i2av_720x720_5s.json",
            "ovi_chained_continue_720x720_5s.json"} <= names
    assert any("demo" in n for n in names)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_structure_links_and_widgets(path):
    wf = load(path)
    skip_native(wf)
    nodes_by_id = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes_by_id) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes_by_id) and wf["last_link_id"] >= max(links_of(wf), default=0)
    assert any(n["type"] in FRONTEND_ONLY for n in wf["nodes"]), "every workflow carries a note for the user"

    for node in wf["nodes"]:
        t = node["type"]
        assert t in OURS or t in CORE_NODES or t in FRONTEND_ONLY, f"unknown node type {t}"
        if t in FRONTEND_ONLY:
            continue
        inputs = ordered_inputs(t)
        specs = {n: s for n, s, _ in inputs}
        _, out_types = definition(t)
        # sockets: the node lists its sockets by name with the definition's type
        for socket in node.get("inputs", []):
            name = (socket.get("widget") or {}).get("name", socket["name"])
            assert name in specs, f"node {node['id']} ({t}) has an input {name} its definition lacks"
            if not socket.get("widget"):
                assert socket["type"] == input_type(specs[name]), f"node {node['id']} ({t}).{name}"
        linked = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        for name, spec, required in inputs:
            if required and not is_widget(spec):
                assert name in linked, f"node {node['id']} ({t}): required input {name} is not connected"
        assert [o["type"] for o in node.get("outputs", [])] == list(out_types), f"node {node['id']} ({t}) outputs"
        # widgets_values: exactly the frontend's slots, each valid
        values = node.get("widgets_values") or []
        slots = widget_slots(t)
        assert len(values) == len(slots), f"node {node['id']} ({t}): {len(values)} widget values for {slots}"
        for (name, kind), value in zip(slots, values):
            where = f"node {node['id']} ({t}).{name} = {value!r}"
            if kind == "control":
                assert value in ("fixed", "increment", "decrement", "randomize"), where
                continue
            if kind == "upload":
                assert value == "image", where
                continue
            spec = specs[name]
            opts = spec[1] if len(spec) > 1 else {}
            kind_of = input_type(spec)
            if (t, name) in RELEASED_FILES:
                assert value in RELEASED_FILES[(t, name)] or value == DEMO_ENTRY, where
            elif kind_of == "COMBO":
                assert value in combo_options(spec), where
            elif kind_of == "INT":
                assert isinstance(value, int) and not isinstance(value, bool), where
                assert opts.get("min", value) <= value <= opts.get("max", value), where
            elif kind_of == "FLOAT":
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert opts.get("min", value) <= value <= opts.get("max", value), where
            elif kind_of == "BOOLEAN":
                assert isinstance(value, bool), where
            elif kind_of == "STRING":
                assert isinstance(value, str), where
        validate = validator(t)
        if validate is not None:
            given = {name: v for (name, kind), v in zip(slots, values) if kind == "value"}
            args = list(inspect.signature(validate).parameters)
            assert validate(**{a: given.get(a) for a in args}) is True, f"node {node['id']} ({t}) fails validate_inputs"

    for link_id, (src, src_slot, dst, dst_slot, link_type) in links_of(wf).items():
        s, d = nodes_by_id[src], nodes_by_id[dst]
        assert s["outputs"][src_slot]["type"] == link_type and link_id in (s["outputs"][src_slot]["links"] or [])
        assert d["inputs"][dst_slot]["link"] == link_id
        name = d["inputs"][dst_slot]["name"]
        assert input_type(dict((n, sp) for n, sp, _ in ordered_inputs(d["type"]))[name]) == link_type, \
            f"link {link_id}: {s['type']} gives {link_type}, {d['type']}.{name} wants another type"
        assert definition(s["type"])[1][src_slot] == link_type


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_prompts_variants_and_sizes_agree(path):
    from ovi_core.config import VARIANTS
    from ovi_core.demo import DEMO_VARIANT
    from ovi_core.prompt import format_prompt_for_variant
    from ovi_core.sizes import is_far_from_area
    from ovi_core.weights import detect_variant

    wf = load(path)
    skip_native(wf)
    prompt = to_prompt(wf)
    models = [n for n in prompt.values() if n["class_type"] == "OviModelLoader"]
    assert len(models) == 1
    m = models[0]["inputs"]
    if m["model_name"] == DEMO_ENTRY:
        variant = DEMO_VARIANT
    elif m["variant"] != "auto":
        variant = VARIANTS[m["variant"]]
    else:
        info = type("Info", (), {"metadata": {}, "path": Path(m["model_name"])})()
        variant = VARIANTS[detect_variant(info)[0]]
    for node in prompt.values():
        i = node["inputs"]
        if node["class_type"] == "OviTextEncode":
            assert VARIANTS[i["variant"]].caption_style == variant.caption_style
            assert format_prompt_for_variant(i["prompt"], i["variant"]) == i["prompt"], "prompt in the wrong form"
        if node["class_type"] == "CLIPTextEncode" and "<S>" in i["text"]:
            assert format_prompt_for_variant(i["text"], variant) == i["text"]
        if node["class_type"] == "OviSampler":
            assert not is_far_from_area(i["height"], i["width"], variant.target_area)
            assert i["slg_layer"] < (3 if variant is DEMO_VARIANT else 30)


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "demo" in p.name], ids=lambda p: p.stem)
def test_demo_workflow_says_it_is_a_demo_and_uses_only_built_in_models(path):
    wf = load(path)
    skip_native(wf)
    notes = " ".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in FRONTEND_ONLY)
    assert "DEMO" in notes and "tiny" in notes and "random" in notes
    for node in to_prompt(wf).values():
        for name, value in node["inputs"].items():
            if (node["class_type"], name) in RELEASED_FILES:
                assert value == DEMO_ENTRY


# ---- execution -------------------------------------------------------------------------------------------------------
def _core_standins():
    """Core nodes with core's semantics (ComfyUI 0.8), enough to run the shipped workflows."""
    from ovi_core.demo import build_demo_text_encoder

    def load_image(image):
        g = torch.Generator().manual_seed(0)
        return (torch.rand(1, 300, 420, 3, generator=g), torch.zeros(1, 300, 420))

    def image_from_batch(image, batch_index, length):
        batch_index = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index: batch_index + length].clone(),)

    def image_batch(image1, image2):
        assert image1.shape[1:] == image2.shape[1:]
        return (torch.cat((image1, image2), dim=0),)

    def trim_audio(audio, start_index, duration):
        rate, n = audio["sample_rate"], audio["waveform"].shape[-1]
        start = max(0, min(int(round(start_index * rate)), n - 1))
        end = max(0, min(start + int(round(duration * rate)), n))
        return ({"waveform": audio["waveform"][..., start:end], "sample_rate": rate},)

    def audio_concat(audio1, audio2, direction):
        a, b = (x["waveform"].repeat(1, 2, 1) if x["waveform"].shape[1] == 1 else x["waveform"] for x in (audio1, audio2))
        assert audio1["sample_rate"] == audio2["sample_rate"]
        joined = torch.cat((a, b) if direction == "after" else (b, a), dim=2)
        return ({"waveform": joined, "sample_rate": audio1["sample_rate"]},)

    def clip_loader(clip_name, type, device="default"):
        assert type == "wan"
        return (build_demo_text_encoder(),)

    def clip_text_encode(text, clip):
        (states,) = clip.encode([text])  # umT5 states [L, 4096]; core zero-pads them to 512 rows
        padded = torch.zeros(1, 512, states.shape[-1])
        padded[0, : states.shape[0]] = states
        return ([[padded, {"pooled_output": None}]],)

    saved = []

    def save_video(video, filename_prefix, format, codec):
        components = video.get_components()
        assert components.images.dim() == 4 and components.audio["waveform"].dim() == 3
        saved.append(components)
        return {}

    return {"LoadImage": load_image, "ImageFromBatch": image_from_batch, "ImageBatch": image_batch,
            "TrimAudioDuration": trim_audio, "AudioConcat": audio_concat, "CLIPLoader": clip_loader,
            "CLIPTextEncode": clip_text_encode, "SaveVideo": save_video}, saved


_LOADER_CACHE: dict = {}


def execute(prompt: dict[int, dict], *, short_clip: bool) -> dict[int, object]:
    """Runs a prompt in dependency order, as ComfyUI does; loader outputs are cached across workflows like
    ComfyUI caches node outputs with unchanged inputs. Returns each node's raw return value."""
    standins, _ = _core_standins()
    results: dict[int, object] = {}

    def value(v):
        if isinstance(v, tuple) and v and v[0] == "link":
            out = run(v[1])
            return (out["result"] if isinstance(out, dict) else out)[v[2]]
        return v

    def run(node_id):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        t, kwargs = node["class_type"], {k: value(v) for k, v in node["inputs"].items()}
        if t in OURS:
            cls = OURS[t]
            key = (t, json.dumps(kwargs, sort_keys=True, default=str), short_clip) if "Loader" in t else None
            if key is not None and key in _LOADER_CACHE:
                out = _LOADER_CACHE[key]
            else:
                out = call_node(cls, **kwargs)
                if t == "OviModelLoader" and short_clip:
                    inner = out[0].model
                    inner.ovi_variant = dataclasses.replace(inner.ovi_variant, video_latent_length=SHORT_LATENTS[0],
                                                            audio_latent_length=SHORT_LATENTS[1])
                if key is not None:
                    _LOADER_CACHE[key] = out
        else:
            out = standins[t](**kwargs)
        results[node_id] = out
        return out

    for node_id in prompt:
        run(node_id)
    return results


def _demo_everywhere(prompt: dict[int, dict]) -> dict[int, dict]:
    """The real-weight workflows on the built-in tiny models: demo entries, a 64x64 short clip, 2 steps."""
    for node in prompt.values():
        t, inputs = node["class_type"], node["inputs"]
        for name in list(inputs):
            if (t, name) in RELEASED_FILES and t != "CLIPLoader":
                inputs[name] = DEMO_ENTRY
        if t == "OviSampler":
            inputs.update(width=64, height=64, steps=2, slg_layer=1)
        # the join in the chained workflow, scaled from 121-frame clips (frame 120, 5.0 s) to 9-frame ones
        if t == "ImageFromBatch":
            inputs.update({k: SHORT_FRAMES - 1 for k in ("batch_index", "length") if inputs[k] == 120})
        if t == "TrimAudioDuration" and inputs["duration"] == 5.0:
            inputs["duration"] = (SHORT_FRAMES - 1) / 24
    return prompt


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_end_to_end_on_the_tiny_models(path, tmp_path):
    from ovi_core.mux import probe_mp4

    wf = load(path)
    skip_native(wf)
    bridge.set_fallback_output_dir(tmp_path)
    try:
        is_demo = "demo" in path.name
        prompt = to_prompt(wf)
        if not is_demo:
            _demo_everywhere(prompt)
        results = execute(prompt, short_clip=not is_demo)
    finally:
        bridge.set_fallback_output_dir(None)

    muxes = [i for i, n in prompt.items() if n["class_type"] == "OviMux"]
    assert muxes
    samplers = [i for i, n in prompt.items() if n["class_type"] == "OviSampler"]
    per_clip = 121 if is_demo else SHORT_FRAMES
    for node_id in muxes:
        out = results[node_id]
        (item,) = out["ui"]["images"]
        info = probe_mp4(tmp_path / item["subfolder"] / item["filename"])
        assert (info.video_streams, info.audio_streams) == (1, 1)
        assert info.num_frames in {per_clip, per_clip * len(samplers) - 1}
        assert abs(info.audio_duration - info.video_duration) < 0.03
        video = out["result"][0]
        assert video.images.shape[0] == info.num_frames
    if "chained" in path.name:  # the joined clip: clip 1 without its last frame + all of clip 2
        joined = max((results[i]["result"][0] for i in muxes), key=lambda v: v.images.shape[0])
        assert joined.images.shape[0] == 2 * per_clip - 1
    if is_demo:
        assert all(results[i]["result"][0].images.shape[1:3] == (64, 64) for i in muxes)


# ---- workflows saved with the V1 nodes (before issue 12: OVI_MODEL sockets, two sampler outputs) --------------------
V1_WORKFLOWS = sorted((ROOT / "tests" / "data" / "v1_workflows").glob("*.json"))


def test_the_v1_workflows_are_the_shipped_ones_of_before():
    assert {p.name for p in V1_WORKFLOWS} >= {"ovi_demo_tiny_model.json", "ovi_t2av_720x720_5s.json",
                                             "ovi_i2av_720x720_5s.json", "ovi_chained_continue_720x720_5s.json"}
    assert all(any(n["type"] == "OviModelLoader" and n["outputs"][0]["type"] == "OVI_MODEL" for n in load(p)["nodes"])
               for p in V1_WORKFLOWS)


@pytest.mark.parametrize("path", V1_WORKFLOWS, ids=lambda p: p.stem)
def test_a_v1_saved_workflow_converts_with_the_current_nodes(path):
    """What the frontend does with a saved workflow: widgets_values by the current widget order, links by slot index.
    Every widget value still fits its input, every required input is given, and each link's source slot now gives
    the type its target input takes (OVI_MODEL -> MODEL on both ends, OVI_TEXT stays slot 0)."""
    wf = load(path)
    prompt = to_prompt(wf)
    for node_id, node in prompt.items():
        t, inputs = node["class_type"], node["inputs"]
        specs = {n: s for n, s, _ in ordered_inputs(t)}
        for name, _, required in ordered_inputs(t):
            assert not required or name in inputs, f"node {node_id} ({t}): {name} missing after conversion"
        for name, value in inputs.items():
            spec = specs[name]
            if isinstance(value, tuple) and value and value[0] == "link":
                src_type = prompt[value[1]]["class_type"]
                assert definition(src_type)[1][value[2]] == input_type(spec), f"node {node_id} ({t}).{name}"
            elif input_type(spec) == "COMBO" and (t, name) not in RELEASED_FILES:
                assert value in combo_options(spec), f"node {node_id} ({t}).{name} = {value!r}"
        validate = validator(t)
        if validate is not None:
            args = list(inspect.signature(validate).parameters)
            plain = {a: v for a, v in inputs.items() if a in args and not (isinstance(v, tuple) and v[0] == "link")}
            assert validate(**plain) is True, f"node {node_id} ({t})"


def test_the_v1_saved_demo_workflow_runs(tmp_path):
    from ovi_core.mux import probe_mp4

    bridge.set_fallback_output_dir(tmp_path)
    try:
        prompt = to_prompt(load(ROOT / "tests" / "data" / "v1_workflows" / "ovi_demo_tiny_model.json"))
        results = execute(prompt, short_clip=False)
    finally:
        bridge.set_fallback_output_dir(None)
    (mux,) = [i for i, n in prompt.items() if n["class_type"] == "OviMux"]
    (item,) = results[mux]["ui"]["images"]
    info = probe_mp4(tmp_path / item["subfolder"] / item["filename"])
    assert (info.video_streams, info.audio_streams, info.num_frames) == (1, 1, 121)
