"""ovi_core/knobs.py is the one source of every knob: the reference's values, the nodes' inputs and the CLI's options
follow it (a node default or choice list typed by hand again, or a --help default that no longer comes from the knob,
fails here), and its one check refuses what the old per-call-site checks refused."""

from __future__ import annotations

import dataclasses
import math

import pytest

import nodes
from ovi_core import cli, knobs
from ovi_core.attention import BACKENDS
from ovi_core.config import VARIANTS
from ovi_core.errors import OviInputError
from ovi_core.sampler import SamplingSettings
from ovi_core.schedulers import SCHEDULERS

# Ovi's own values (the reference's yaml / gradio app): what our defaults must stay.
REFERENCE = {"seed": 103, "steps": 50, "solver": "unipc", "shift": 5.0, "video_guidance": 4.0, "audio_guidance": 3.0,
             "slg_layer": 11, "video_negative": "jitter, bad hands, blur, distortion",
             "audio_negative": "robotic, muffled, echo, distorted"}
# node inputs named otherwise than their knob (saved workflows know them by these names)
ALIASES = {"video_cfg": knobs.VIDEO_GUIDANCE, "audio_cfg": knobs.AUDIO_GUIDANCE, "skip_layer": knobs.SLG_LAYER}
PER_NODE = {("OviTextEncoderLoader", "precision"): knobs.TEXT_ENCODER_PRECISION,
            ("OviVideoVAELoader", "precision"): knobs.VIDEO_VAE_PRECISION}
BY_NAME = {k.name: k for k in vars(knobs).values() if isinstance(k, knobs.Knob) and k.name != "precision"}


def test_the_reference_values_are_the_defaults():
    for name, value in REFERENCE.items():
        assert BY_NAME[name].default == value and BY_NAME[name].reference_value == value, name
    assert SamplingSettings() == SamplingSettings(**{k: knobs.SAMPLING[k].default for k in knobs.SAMPLING})
    for knob in (knobs.SYNC_GUIDANCE, knobs.SYNC_CUT, knobs.CACHE_THRESHOLD):  # ours: off, today's numbers exactly
        assert knob.reference is None and knob.default in (0.0, "both")


def _kept(options, shipped: list) -> bool:
    """The shipped choices are all still offered, in their order (new ones may follow)."""
    return [o for o in options if o in shipped] == shipped


def test_the_choice_tables_come_from_their_registries():
    # (the shipped names stay: saved workflows hold them; adding one touches only its table)
    assert knobs.SOLVERS == tuple(SCHEDULERS) and _kept(knobs.SOLVERS, ["unipc", "euler", "dpm++"])
    assert knobs.ATTENTION_BACKENDS == tuple(BACKENDS) and _kept(knobs.ATTENTION_BACKENDS, ["sdpa", "flash_attn", "sage"])
    assert knobs.VARIANT_NAMES == tuple(VARIANTS)
    assert _kept(knobs.WEIGHT_DTYPES, ["auto", "bf16", "fp16", "fp32", "fp8_e4m3fn"])
    assert set(knobs.COMPUTE_DTYPES) < set(knobs.WEIGHT_DTYPES)


def knob_of(node_id: str, name: str):
    if (node_id, name) in PER_NODE:
        return PER_NODE[node_id, name]
    return ALIASES.get(name) or BY_NAME.get(name)


def assert_inputs_follow_knobs(node_id: str, inputs: dict) -> int:
    """Every input of a node that is a knob has the knob's default, widget range, step and options; returns how many
    inputs were compared."""
    compared = 0
    for name, (kind, opts) in ((n, (s[0], s[1] if len(s) > 1 else {})) for n, s in inputs.items()):
        knob = knob_of(node_id, name)
        widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "COMBO")  # not a socket
        if knob is None or not widget or (node_id, name) == ("OviModelLoader", "variant"):
            continue
        where = f"{node_id}.{name}"
        assert opts.get("default") == knob.default, where
        if knob.choices:
            options = opts["options"] if kind == "COMBO" else kind
            assert list(options) == knob.options, where
        elif knob.kind is not str:
            assert (opts.get("min"), opts.get("max")) == (knob.widget_min, knob.widget_max), where
            assert opts.get("step") == knob.step or knob.step is None, where
        assert opts.get("tooltip", "").startswith(knob.tooltip()[:40]), where
        compared += 1
    return compared


def test_node_inputs_follow_the_knobs():
    compared = 0
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        it = cls.INPUT_TYPES()
        compared += assert_inputs_follow_knobs(node_id, {**it.get("required", {}), **it.get("optional", {})})
    assert compared >= 18  # sampler 11 (seed .. sync_cut, width, height), loaders 4, text encode 3
    loader = nodes.NODE_CLASS_MAPPINGS["OviModelLoader"].INPUT_TYPES()["required"]
    assert loader["variant"][1]["options"] == ["auto", *knobs.VARIANT_NAMES]
    # the values saved workflows hold: unchanged by the move to knobs
    sampler = nodes.NODE_CLASS_MAPPINGS["OviSampler"].INPUT_TYPES()
    spec = {**sampler["required"], **sampler["optional"]}
    assert [spec[n][1]["default"] for n in ("seed", "steps", "solver", "shift", "video_guidance", "audio_guidance",
                                            "slg_layer", "width", "height", "sync_guidance", "sync_cut")] == [
        103, 50, "unipc", 5.0, 4.0, 3.0, 11, 704, 704, 0.0, "both"]
    assert (spec["shift"][1]["min"], spec["shift"][1]["max"], spec["video_guidance"][1]["max"],
            spec["slg_layer"][1]["max"], spec["seed"][1]["max"]) == (0.01, 100.0, 30.0, 63, 2**64 - 1)
    assert _kept(loader["weight_dtype"][1]["options"], ["auto", "bf16", "fp16", "fp8_e4m3fn"])
    te = nodes.NODE_CLASS_MAPPINGS["OviTextEncoderLoader"].INPUT_TYPES()["required"]
    vae = nodes.NODE_CLASS_MAPPINGS["OviVideoVAELoader"].INPUT_TYPES()["required"]
    assert _kept(te["precision"][1]["options"], ["auto", "bf16", "fp32"]) and "fp16" not in te["precision"][1]["options"]
    assert _kept(vae["precision"][1]["options"], ["auto", "fp32", "bf16", "fp16"])


def _generate_parser():
    parser = cli.build_parser()
    return parser._subparsers._group_actions[0].choices["generate"]


def test_cli_choices_and_help_defaults_come_from_the_knobs(monkeypatch):
    actions = {a.dest: a for a in _generate_parser()._actions}
    assert tuple(actions["solver"].choices) == knobs.SOLVERS
    assert tuple(actions["sync_cut"].choices) == knobs.SYNC_CUTS
    assert tuple(actions["weight_dtype"].choices) == tuple(knobs.WEIGHT_DTYPES)
    assert tuple(actions["dtype"].choices) == tuple(actions["vae_dtype"].choices) == tuple(knobs.COMPUTE_DTYPES)
    assert tuple(actions["attention"].choices) == knobs.ATTENTION_BACKENDS
    assert tuple(actions["variant"].choices) == knobs.VARIANT_NAMES
    for name, knob in knobs.SAMPLING.items():
        assert actions[name].help.endswith(f"(default {knob.default})"), name
    assert cli.RUNTIME_DEFAULTS == {"dtype": "bf16", "weight_dtype": "auto", "vae_dtype": "fp32", "attention": "sdpa"}

    # change the knobs: the help follows without touching the CLI
    monkeypatch.setitem(knobs.SAMPLING, "steps", dataclasses.replace(knobs.STEPS, default=77, max=500))
    monkeypatch.setattr(knobs, "ATTENTION", dataclasses.replace(knobs.ATTENTION, default="sage"))
    text = " ".join(_generate_parser().format_help().split())
    assert "sampling steps, 1..500 (default 77)" in text
    assert "warning otherwise) (default sage)" in text
    with pytest.raises(SystemExit):
        _generate_parser().parse_args(["-p", "x", "--steps", "501"])


@pytest.mark.parametrize("knob, value, words", [
    ("steps", 0, ["steps", "between 1 and 1000", "Ovi's default is 50"]),
    ("steps", 2.5, ["whole number"]),
    ("steps", True, ["whole number"]),
    ("seed", 2**64, ["seed", "2**64 - 1"]),
    ("shift", 0.0, ["shift must be a number > 0"]),
    ("shift", math.nan, ["shift", "finite", "nan"]),
    ("video_guidance", math.inf, ["video_guidance", "finite", "inf"]),
    ("audio_guidance", -0.5, ["audio_guidance", ">= 0"]),
    ("audio_guidance", "3", ["audio_guidance", "number"]),
    ("sync_guidance", math.nan, ["sync_guidance", "finite"]),
    ("sync_cut", "left", ["sync_cut", "both, audio_to_video, video_to_audio"]),
    ("solver", "ddim", ["unknown solver", "unipc"]),
    ("cache_threshold", -1.0, ["cache_threshold", ">= 0"]),
    ("slg_layer", -2, ["slg_layer", ">= -1"]),
])
def test_one_check_refuses_bad_values(knob, value, words):
    with pytest.raises(OviInputError) as err:
        knobs.check_sampling(**{knob: value})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_slg_layer_is_bounded_by_the_model_and_an_input_keeps_its_name():
    knobs.check_sampling(12, slg_layer=11)
    with pytest.raises(OviInputError, match=r"skip_layer 3 is past the model's 3 fused blocks.*between -1 and 2"):
        knobs.check(knobs.SLG_LAYER, 3, "skip_layer", num_layers=3)
    with pytest.raises(TypeError, match="unknown sampling knob"):
        knobs.check_sampling(stepz=5)
