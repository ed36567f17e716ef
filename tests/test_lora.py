"""LoRA on the Ovi MODEL through core's LoraLoaderModelOnly (ComfyUI's nodes.py), on the demo model, inside ComfyUI's
venv (skipped elsewhere):
    PYTHONPATH=/path/to/ComfyUI:. /path/to/comfy_venv/bin/python -m pytest -q tests/test_lora.py

Proves, with tiny LoRA files written in each key style: every patched weight equals W + s·(alpha/rank)·B·A (float32
rounding), for Ovi's own layout (both towers, with and without "diffusion_model.") and the Wan2.2-TI2V-5B styles
(diffusion_model.blocks.N, bare blocks.N, lora_unet_blocks_N + alpha, diffusers transformer.blocks.N with Wan or
diffusers layer names) landing on the video tower only; every other weight is untouched; a LoRA for another model
changes nothing and is reported with its key count; a partly matching file reports the count it could not load.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tests import comfy_inproc  # first: skips this module where ComfyUI is not importable, else sets up ComfyUI

native = comfy_inproc.load_nodes_module("native_model")

import folder_paths  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from ovi_core.demo import build_demo_fusion  # noqa: E402

RANK = 4


@pytest.fixture(scope="module")
def core_nodes():
    """ComfyUI's nodes.py (LoraLoaderModelOnly)."""
    (module,) = comfy_inproc.load_core()
    return module


@pytest.fixture(scope="module")
def model():
    return native.build_model_patcher(build_demo_fusion(), slg_layer=1)


@pytest.fixture
def lora_dir(tmp_path, monkeypatch):
    folders = dict(folder_paths.folder_names_and_paths)
    folders["loras"] = ([str(tmp_path)], {".safetensors"})
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", folders)
    return tmp_path


def _weights(patcher) -> dict[str, torch.Tensor]:
    """The fusion's weights as sampling sees them (patched in place, copied, unpatched again)."""
    patcher.patch_model(device_to=torch.device("cpu"))
    try:
        return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    finally:
        patcher.unpatch_model()


def _write(folder: Path, name: str, layers: dict[str, tuple[str, str]], base: dict, style: str, alpha=None,
           extra: dict | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA file: ``layers`` = {LoRA layer name: (Ovi key, unused)}; returns {Ovi key: B·A·alpha/rank}."""
    g = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for layer, (target, _) in layers.items():
        out_f, in_f = base[target].shape
        down = torch.randn(RANK, in_f, generator=g)
        up = torch.randn(out_f, RANK, generator=g)
        if style == "A/B":
            tensors[f"{layer}.lora_A.weight"], tensors[f"{layer}.lora_B.weight"] = down, up
        else:
            tensors[f"{layer}.lora_down.weight"], tensors[f"{layer}.lora_up.weight"] = down, up
        scale = 1.0
        if alpha is not None:
            tensors[f"{layer}.alpha"] = torch.tensor(float(alpha))
            scale = alpha / RANK
        deltas[target] = scale * (up @ down)
    tensors.update(extra or {})
    save_file(tensors, str(folder / name))
    return deltas


def _check(patched: dict, base: dict, deltas: dict, strength: float) -> float:
    """Every weight: W + strength·Δ where a delta exists, else W exactly. Returns the largest difference."""
    worst = 0.0
    for key, w in base.items():
        if key in deltas:
            expected = w + strength * deltas[key]
            diff = float((patched[key] - expected).abs().max())
            assert diff <= 1e-5 * max(1.0, float(expected.abs().max())), (key, diff)
            assert not torch.equal(patched[key], w), key
            worst = max(worst, diff)
        else:
            assert torch.equal(patched[key], w), f"{key} changed but no LoRA layer names it"
    return worst


V, A = "video_model.blocks", "audio_model.blocks"
STYLES = {
    # name: (key style, alpha, {LoRA layer: Ovi weight key})
    "ovi_prefixed": ("A/B", None, {f"diffusion_model.{V}.0.self_attn.q": f"{V}.0.self_attn.q.weight",
                                   f"diffusion_model.{A}.1.ffn.0": f"{A}.1.ffn.0.weight",
                                   f"diffusion_model.{A}.2.cross_attn.k_fusion": f"{A}.2.cross_attn.k_fusion.weight"}),
    "ovi_bare": ("A/B", 2.0, {f"{V}.1.cross_attn.v_fusion": f"{V}.1.cross_attn.v_fusion.weight",
                              f"{A}.0.self_attn.o": f"{A}.0.self_attn.o.weight",
                              "video_model.head.head": "video_model.head.head.weight"}),
    "wan_diffusion_model": ("A/B", None, {"diffusion_model.blocks.0.self_attn.k": f"{V}.0.self_attn.k.weight",
                                          "diffusion_model.blocks.2.cross_attn.o": f"{V}.2.cross_attn.o.weight",
                                          "diffusion_model.blocks.1.ffn.2": f"{V}.1.ffn.2.weight"}),
    "wan_bare_blocks": ("A/B", None, {"blocks.2.self_attn.v": f"{V}.2.self_attn.v.weight"}),
    "wan_lora_unet_alpha": ("down/up", 8.0, {"lora_unet_blocks_0_ffn_0": f"{V}.0.ffn.0.weight",
                                             "lora_unet_blocks_1_cross_attn_q": f"{V}.1.cross_attn.q.weight",
                                             "lora_unet_blocks_2_self_attn_o": f"{V}.2.self_attn.o.weight"}),
    "wan_diffusers": ("A/B", 1.0, {"transformer.blocks.0.attn1.to_q": f"{V}.0.self_attn.q.weight",
                                   "transformer.blocks.1.attn1.to_out.0": f"{V}.1.self_attn.o.weight",
                                   "transformer.blocks.2.attn2.to_k": f"{V}.2.cross_attn.k.weight",
                                   "transformer.blocks.0.ffn.net.0.proj": f"{V}.0.ffn.0.weight",
                                   "transformer.blocks.1.ffn.net.2": f"{V}.1.ffn.2.weight",
                                   "transformer.blocks.2.self_attn.q": f"{V}.2.self_attn.q.weight"}),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_lora_styles_patch_exactly_w_plus_scaled_ba(style, model, core_nodes, lora_dir, caplog):
    key_style, alpha, layers = STYLES[style]
    base = _weights(model)
    deltas = _write(lora_dir, f"{style}.safetensors", {k: (v, None) for k, v in layers.items()}, base, key_style,
                    alpha=alpha)
    strength = 0.75
    with caplog.at_level(logging.INFO):
        (patched_model,) = core_nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{style}.safetensors",
                                                                                  strength)
    assert len(patched_model.patches) == len(layers)
    worst = _check(_weights(patched_model), base, deltas, strength)
    print(f"{style}: {len(layers)} layers, max |patched - (W + s·(alpha/r)·B·A)| = {worst:.3g}")
    assert "lora key not loaded" not in caplog.text
    assert f"Ovi LoRA: {len(layers)} layers patched" in caplog.text
    if style.startswith("wan"):  # Wan2.2 LoRAs touch the video tower only
        assert all(k.startswith("diffusion_model.video_model.") for k in patched_model.patches)
    assert torch.equal(_weights(model)[next(iter(deltas))], base[next(iter(deltas))])  # the input MODEL is unchanged


def test_lora_for_another_model_changes_nothing_and_says_so(model, core_nodes, lora_dir, caplog):
    g = torch.Generator().manual_seed(1)
    flux = {f"lora_unet_double_blocks_{i}_img_attn_qkv.lora_{p}.weight": torch.randn(4, 8, generator=g)
            for i in range(3) for p in ("down", "up")}
    flux.update({f"lora_unet_double_blocks_{i}_img_attn_qkv.alpha": torch.tensor(4.0) for i in range(3)})
    save_file(flux, str(lora_dir / "flux.safetensors"))
    base = _weights(model)
    with caplog.at_level(logging.INFO):
        (patched_model,) = core_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "flux.safetensors", 1.0)
    assert not patched_model.patches
    patched = _weights(patched_model)
    assert all(torch.equal(patched[k], base[k]) for k in base)
    assert "none of the file's 9 keys matches a layer of the Ovi model (9 unmatched)" in caplog.text
    assert "for another model" in caplog.text


def test_partly_matching_lora_reports_the_unmatched_count(model, core_nodes, lora_dir, caplog):
    base = _weights(model)
    g = torch.Generator().manual_seed(2)
    stray = {"text_encoders.t5.block_0.lora_A.weight": torch.randn(4, 8, generator=g),
             "text_encoders.t5.block_0.lora_B.weight": torch.randn(8, 4, generator=g),
             "diffusion_model.blocks.99.self_attn.q.lora_A.weight": torch.randn(4, 8, generator=g)}
    deltas = _write(lora_dir, "mixed.safetensors", {"diffusion_model.blocks.0.self_attn.q":
                                                    (f"{V}.0.self_attn.q.weight", None)}, base, "A/B", extra=stray)
    with caplog.at_level(logging.INFO):
        (patched_model,) = core_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "mixed.safetensors", 1.0)
    _check(_weights(patched_model), base, deltas, 1.0)
    assert "Ovi LoRA: 1 layers patched (video tower 1, audio tower 0) from 5 keys" in caplog.text
    assert "3 of the file's 5 keys match no layer of the Ovi model" in caplog.text
    assert caplog.text.count("lora key not loaded") == 3  # core's own per-key lines stay


def test_key_map_covers_every_video_block_layer_in_wan_styles(model):
    """The map itself: every Linear of every video block is reachable in each Wan2.2 style; no Wan name reaches the
    audio tower."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    linears = [k for k in model.model.state_dict() if k.startswith(f"diffusion_model.{V}.") and k.endswith(".weight")
               and model.model.state_dict()[k].dim() == 2]
    assert linears
    for key in linears:
        wan = key[len("diffusion_model.video_model."): -len(".weight")]
        for name in (f"diffusion_model.{wan}", wan, f"lora_unet_{wan.replace('.', '_')}", f"transformer.{wan}",
                     key[len("diffusion_model."): -len(".weight")], key[: -len(".weight")]):
            assert key_map[name] == key, name
    assert not any(v.startswith("diffusion_model.audio_model.") for k, v in key_map.items()
                   if k.startswith(("blocks.", "diffusion_model.blocks.", "lora_unet_blocks_", "transformer.")))


def test_wan_full_weight_diffs_modulation_and_biases(model, core_nodes, lora_dir, caplog):
    """".diff" / ".diff_b" patches (Wan trainers save norms, biases and the modulation tables this way): Wan's
    blocks.N.modulation is Ovi's blocks.N.modulation.modulation; patched = W + s·diff."""
    base = _weights(model)
    g = torch.Generator().manual_seed(4)
    targets = {"diffusion_model.blocks.1.modulation.diff": f"{V}.1.modulation.modulation",
               "diffusion_model.head.modulation.diff": "video_model.head.modulation",
               "diffusion_model.blocks.0.self_attn.q.diff_b": f"{V}.0.self_attn.q.bias",
               "blocks.2.norm3.diff": f"{V}.2.norm3.weight",
               "transformer.blocks.0.scale_shift_table.diff": f"{V}.0.modulation.modulation"}
    tensors = {name: torch.randn(base[key].shape, generator=g) for name, key in targets.items()}
    save_file(tensors, str(lora_dir / "wan_diffs.safetensors"))
    with caplog.at_level(logging.INFO):
        (patched_model,) = core_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "wan_diffs.safetensors", 0.5)
    deltas = {key: tensors[name] for name, key in targets.items() if key != "video_model.head.modulation"}
    _check(_weights(patched_model), base, deltas, 0.5)
    # head.modulation sits on a module with a sub-layer: core's patcher skips it (as core Wan's) -> left out, logged
    assert "Ovi LoRA: 1 patches target parameters ComfyUI's model patcher does not patch (video_model.head." \
           "modulation" in caplog.text
    assert "Ovi LoRA: 4 layers patched (video tower 4, audio tower 0) from 5 keys" in caplog.text
