"""The file-kind registry (ovi_core.filekinds): what each file is, and kijai's split Ovi files loaded as the fused model.

kijai's ComfyUI-WanVideoWrapper publishes Ovi as two files (huggingface.co/Kijai/WanVideo_comfy, Ovi/):
``Wan_2_2_Ovi_video_model_bf16.safetensors`` holds the video tower with bare WanModel names (no ``video_model.``
prefix) and ``Wan_2_2_Ovi_audio_model_bf16.safetensors`` the audio tower under ``audio_model.``; in both a block's
modulation is a plain parameter (``blocks.N.modulation``, ours ``blocks.N.modulation.modulation``). The tiny files
here are written in exactly that layout from a tiny OviFusion state dict, by the inverse of the registry's mapping.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ovi_core import filekinds
from ovi_core.demo import build_demo_fusion
from ovi_core.errors import WrongFileError
from ovi_core.weights import inspect_checkpoint, load_fusion_model, save_fusion_checkpoint

VIDEO_NAME = "Wan_2_2_Ovi_video_model_bf16.safetensors"
AUDIO_NAME = "Wan_2_2_Ovi_audio_model_bf16.safetensors"
_MOD = re.compile(r"^((?:audio_model\.)?blocks\.\d+\.modulation)\.modulation$")


def kijai_split(sd: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Our fused state dict -> (video file, audio file) in kijai's layout (the inverse of the registry's rename)."""
    video, audio = {}, {}
    for k, v in sd.items():
        if k.startswith("video_model."):
            video[_MOD.sub(r"\1", k.removeprefix("video_model."))] = v.contiguous()
        else:
            audio[_MOD.sub(r"\1", k)] = v.contiguous()
    return video, audio


@pytest.fixture(scope="module")
def fused():
    return build_demo_fusion()


def _write_split(folder: Path, model, video_name=VIDEO_NAME, audio_name=AUDIO_NAME, metadata=True) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    video, audio = kijai_split(model.state_dict())
    # the tiny model's head count cannot be read from its width (64 = 2 heads of 32); full-size files need no metadata
    meta = {"ovi_config": json.dumps(model.cfg.to_reference_json())} if metadata else None
    save_file(video, str(folder / video_name), metadata=meta)
    save_file(audio, str(folder / audio_name), metadata=meta)
    return folder / video_name, folder / audio_name


def test_split_layout_is_kijais(fused, tmp_path):
    video_path, audio_path = _write_split(tmp_path, fused)
    video = filekinds.read_header(video_path).keys
    audio = filekinds.read_header(audio_path).keys
    assert "blocks.0.modulation" in video and "blocks.0.cross_attn.k_fusion.weight" in video
    assert "patch_embedding.weight" in video and not any(k.startswith("video_model.") for k in video)
    assert "audio_model.patch_embedding.0.weight" in audio and "audio_model.blocks.2.modulation" in audio
    assert filekinds.identify(video_path).kind.name == "kijai_ovi_video"
    assert filekinds.identify(audio_path).kind.name == "kijai_ovi_audio"


@pytest.mark.parametrize("pick", ["video", "audio"])
def test_either_split_file_loads_the_fused_model_bit_for_bit(fused, tmp_path, pick):
    video_path, audio_path = _write_split(tmp_path / "split", fused)
    save_fusion_checkpoint(fused, tmp_path / "model.safetensors")
    ref, ref_info = load_fusion_model(tmp_path / "model.safetensors", dtype=torch.float32, variant="720x720_5s")
    model, info = load_fusion_model(video_path if pick == "video" else audio_path, dtype=torch.float32,
                                    variant="720x720_5s")
    assert info.parameters == ref_info.parameters and info.config == ref_info.config
    sd, ref_sd = model.state_dict(), ref.state_dict()
    assert list(sd) == list(ref_sd) and all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd)
    for net in (model, ref):  # fresh aligned copies: a memory-mapped tensor's offset in the file can change the
        for p in net.parameters():  # CPU kernel's summation order (ulp-level differences unrelated to the layout)
            p.data = p.data.clone()
    g = torch.Generator().manual_seed(0)
    cfg = fused.cfg
    v = torch.randn(1, cfg.video.in_dim, 2, 4, 4, generator=g)
    a = torch.randn(1, 6, cfg.audio.in_dim, generator=g)
    ctx = torch.randn(5, cfg.video.text_dim, generator=g)
    t = torch.tensor([500.0])
    out, out_ref = model(v, a, t, [ctx], [ctx]), ref(v, a, t, [ctx], [ctx])
    assert all(torch.equal(x, y) for x, y in zip(out, out_ref, strict=True))


def test_missing_partner_is_named(fused, tmp_path):
    video_path, audio_path = _write_split(tmp_path, fused)
    audio_path.unlink()
    with pytest.raises(WrongFileError, match=rf"video-tower half.*partner `{AUDIO_NAME}` was not found"):
        load_fusion_model(video_path)
    video_path.rename(tmp_path / "elsewhere.safetensors")
    _write_split(tmp_path / "b", fused)
    (tmp_path / "b" / VIDEO_NAME).unlink()
    with pytest.raises(WrongFileError, match=rf"audio-tower half.*partner `{VIDEO_NAME}` was not found"):
        inspect_checkpoint(tmp_path / "b" / AUDIO_NAME)


def test_partner_found_by_kind_when_renamed(fused, tmp_path):
    video_path, _ = _write_split(tmp_path, fused, audio_name="ovi_sound_half.safetensors")
    info = inspect_checkpoint(video_path)
    assert set(info.files.values()) == {tmp_path / "ovi_sound_half.safetensors"}
    assert filekinds.partner_names("Wan2_2_Ovi_Video_fp8_e4m3fn_scaled_KJ.safetensors") == [
        "Wan2_2_Ovi_Audio_fp8_e4m3fn_scaled_KJ.safetensors"]


def test_scaled_fp8_split_files_are_dequantised(fused, tmp_path):
    # kijai's fp8 files: float8 e4m3fn block weights with a per-layer `.scale_weight` (weight = fp8 * scale)
    video, audio = kijai_split(fused.state_dict())
    expect = {}
    for part in (video, audio):
        for k in [k for k in part if ".blocks." in f".{k}" and k.endswith(".weight") and part[k].dim() == 2]:
            w = part[k]
            scale = w.abs().max() / 448
            part[k] = (w / scale).to(torch.float8_e4m3fn)
            part[k.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
            expect[k] = part[k].float() * scale
        part["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    meta = {"ovi_config": json.dumps(fused.cfg.to_reference_json())}
    save_file(video, str(tmp_path / "Wan2_2_Ovi_Video_fp8_e4m3fn_scaled_KJ.safetensors"), metadata=meta)
    save_file(audio, str(tmp_path / "Wan2_2_Ovi_Audio_fp8_e4m3fn_scaled_KJ.safetensors"), metadata=meta)
    model, info = load_fusion_model(tmp_path / "Wan2_2_Ovi_Video_fp8_e4m3fn_scaled_KJ.safetensors", dtype=torch.float32)
    assert not info.is_fp8  # dequantised to the compute dtype
    sd = model.state_dict()
    assert torch.equal(sd["video_model.blocks.1.self_attn.q.weight"], expect["blocks.1.self_attn.q.weight"])
    assert torch.equal(sd["audio_model.blocks.0.ffn.0.weight"], expect["audio_model.blocks.0.ffn.0.weight"])
    assert torch.equal(sd["video_model.head.head.weight"], fused.state_dict()["video_model.head.head.weight"])


def test_kijai_single_file_layout_loads(fused, tmp_path):
    video, audio = kijai_split(fused.state_dict())
    path = tmp_path / "Wan2_2-5B-Ovi_960x960_bf16.safetensors"
    save_file({**video, **audio}, str(path), metadata={"ovi_config": json.dumps(fused.cfg.to_reference_json())})
    assert filekinds.identify(path).kind.name == "kijai_ovi_single"
    model, info = load_fusion_model(path, dtype=torch.float32)
    assert info.variant == "960x960_5s" and not inspect_checkpoint(path).files
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fused.state_dict().items())


def test_comfy_models_folder_finds_the_split_model_once(fused, tmp_path):
    from ovi_core.demo import write_demo_checkpoints
    from ovi_core.model_paths import check_weight_files, find_in_comfy_models

    write_demo_checkpoints(tmp_path, "comfy")
    (tmp_path / "ovi" / "model.safetensors").unlink()
    video_path, audio_path = _write_split(tmp_path / "diffusion_models" / "Ovi", fused)
    paths = find_in_comfy_models(tmp_path)
    assert paths.fusion in (video_path, audio_path)
    results = {part: (problem, about) for part, _, problem, about in check_weight_files(paths, full=False)}
    assert results["fusion"][0] is None and "Ovi model in two files" in results["fusion"][1]


def test_pipeline_and_node_loader_accept_a_split_file(fused, tmp_path):
    from ovi_core.demo import write_demo_checkpoints
    from ovi_core.pipeline import OviPipeline

    write_demo_checkpoints(tmp_path, "reference")
    video_path, _ = _write_split(tmp_path / "split", fused)
    pipe = OviPipeline.from_paths(video_path, tmp_path / "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth",
                                  tmp_path / "Wan2.2-TI2V-5B/Wan2.2_VAE.pth", tmp_path / "MMAudio/ext_weights/v1-16.pth",
                                  tmp_path / "MMAudio/ext_weights/best_netG.pt", variant="720x720_5s", device="cpu",
                                  dtype=torch.float32)
    assert pipe.num_layers == fused.cfg.num_layers and pipe.variant.name == "720x720_5s"
    net = pipe.parts["fusion"].get()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in fused.state_dict().items())


def test_node_loader_reads_a_split_file(fused, tmp_path):
    from nodes import bridge, loaders

    if bridge.HAVE_COMFY:
        pytest.skip("uses the loader's no-ComfyUI folder lookup (tests/test_nodes.py's loader tests run the same way)")
    folder = tmp_path / "diffusion_models"
    _write_split(folder, fused)
    bridge.set_fallback_folders("diffusion_models", [folder])
    try:
        (model,) = loaders.OviModelLoader.execute(model_name=AUDIO_NAME, variant="auto", weight_dtype="auto",
                                                  attention="sdpa", memory_mode=loaders.MEMORY_MODES[0],
                                                  swap_blocks=0).args
    finally:
        bridge.set_fallback_folders("diffusion_models", [])
    net = model.model.diffusion_model
    assert all(torch.equal(net.state_dict()[k], v.to(net.state_dict()[k].dtype)) for k, v in fused.state_dict().items())


# ---- the table says what every other file is -------------------------------------------------------------------------
@pytest.mark.parametrize("keys, kind", [
    ({"video_model.x": 1, "audio_model.x": 1}, "ovi_fused"),
    ({"model.diffusion_model.video_model.x": 1, "model.diffusion_model.audio_model.x": 1}, "ovi_fused"),
    ({"video_model.blocks.0.x": 1}, "ovi_one_tower"),
    ({"patch_embedding.weight": 1, "blocks.0.self_attn.q.weight": 1}, "wan_video_dit"),
    ({"blocks.0.attn.q.weight": 1, "token_embedding.weight": 1}, "umt5_wan"),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": 1, "shared.weight": 1}, "umt5_transformers"),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": 1, "encoder.block.0.layer.0.SelfAttention.q.scale_weight": 1,
      "scaled_fp8": 1}, "umt5_scaled_fp8"),
    ({"text_model.encoder.layers.0.mlp.fc1.weight": 1}, "clip_text"),
    ({"vae.decoder.conv_in.weight": 1, "vocoder.conv_pre.weight": 1}, "mmaudio_vae_vocoder"),
    ({"decoder.conv_in.weight": 1, "data_mean": 1}, "mmaudio_vae"),
    ({"conv_pre.weight_v": 1, "ups.0.0.weight_v": 1}, "bigvgan"),
    ({"decoder.middle.0.residual.0.gamma": 1, "conv2.weight": 1, "decoder.conv1.weight": (8, 48, 3, 3, 3)}, "wan22_vae"),
    ({"first_stage_model.decoder.middle.0.residual.0.gamma": 1,
      "first_stage_model.decoder.conv1.weight": (8, 48, 3, 3, 3)}, "wan22_vae"),
    ({"decoder.middle.0.residual.0.gamma": 1, "conv2.weight": 1}, "wan_vae_other"),  # latent channels unknown
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": 1, "encoder.block.1.layer.0.SelfAttention.q.weight": 1,
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": 1}, "t5_v11"),
    ({"encoder.block.0.layer.0.SelfAttention.q.weight": 1, "encoder.block.1.layer.0.SelfAttention.q.weight": 1,
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": 1,
      "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": 1}, "umt5_transformers"),
    ({"decoder.up_blocks.0.x": 1}, "image_vae"),
    ({"first_stage_model.post_quant_conv.weight": 1, "first_stage_model.decoder.conv_out.weight": 1}, "image_vae"),
    ({"double_blocks.0.img_attn.qkv.weight": 1, "single_blocks.0.linear1.weight": 1}, "flux_dit"),
    ({"model.diffusion_model.input_blocks.0.0.weight": 1}, "sd_unet"),
    ({"foo": 1}, "unknown"),
])
def test_identify(keys, kind):
    found = filekinds.identify({k: torch.zeros(v if isinstance(v, tuple) else 1) for k, v in keys.items()})
    assert found.kind.name == kind


def test_wan21_vae_is_told_by_its_latent_channels():
    sd = {"decoder.middle.0.residual.0.gamma": torch.zeros(4), "decoder.conv1.weight": torch.zeros(8, 16, 3, 3, 3)}
    assert filekinds.describe(sd) == "a Wan2.1 video VAE (16-channel latents)"
    sd["decoder.conv1.weight"] = torch.zeros(8, 48, 3, 3, 3)
    assert filekinds.identify(sd).kind.part == "video_vae"


def test_header_is_read_once_per_file(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    save_file({"conv_pre.weight": torch.zeros(2)}, str(path))
    calls = []
    real = filekinds.CheckpointFile
    monkeypatch.setattr(filekinds, "CheckpointFile", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        filekinds.identify(path)
    assert len(calls) == 1
    save_file({"decoder.conv_in.weight": torch.zeros(2), "data_mean": torch.zeros(1)}, str(path))  # changed: re-read
    assert filekinds.identify(path).kind.name == "mmaudio_vae" and len(calls) == 2


def test_every_part_has_a_kind_and_names_are_unique():
    assert len({k.name for k in filekinds.KINDS}) == len(filekinds.KINDS)
    assert {k.part for k in filekinds.KINDS} - {None} == set(filekinds.PARTS)
    assert all(k.partner in filekinds.BY_NAME for k in filekinds.KINDS if k.partner)


# ---- a file given to another part's loader: the message names the loader that takes it ---------------------------
_FILE_OF_PART = {"fusion": "tiny_fusion.safetensors", "text_encoder": "tiny_t5.safetensors",
                 "video_vae": "tiny_wan22_vae_decoder.safetensors", "audio_vae": "tiny_mmaudio_vae.safetensors",
                 "vocoder": "tiny_bigvgan.safetensors"}
_LOADER_WORDS = {"fusion": r"load it with the Ovi model loader \(CLI: --model\)",
                 "text_encoder": r"load it with the Ovi text encoder loader \(CLI: --text-encoder\)",
                 "video_vae": r"load it with the Ovi video VAE loader \(CLI: --video-vae\)",
                 "audio_vae": r"load it with the Ovi audio VAE loader as its vae_name \(CLI: --audio-vae\)",
                 "vocoder": r"load it with the Ovi audio VAE loader as its vocoder_name \(CLI: --vocoder\)"}


def _loaders():
    from ovi_core.bigvgan import vocoder_from_state_dict
    from ovi_core.checkpoint_io import read_checkpoint
    from ovi_core.mmaudio_encoder import load_audio_encoder
    from ovi_core.mmaudio_vae import load_audio_decoder
    from ovi_core.text_encoder import load_text_encoder
    from ovi_core.wan_vae import load_video_vae

    return {"fusion": [load_fusion_model], "text_encoder": [load_text_encoder], "video_vae": [load_video_vae],
            "audio_vae": [lambda p: load_audio_decoder(p, p), load_audio_encoder],
            "vocoder": [lambda p: vocoder_from_state_dict(read_checkpoint(p), source=p.name)]}


@pytest.mark.parametrize("asked", filekinds.PARTS)
@pytest.mark.parametrize("given", filekinds.PARTS)
def test_a_file_of_another_part_names_its_loader(golden_dir, asked, given):
    path = golden_dir / _FILE_OF_PART[given]
    assert filekinds.identify(path).kind.part == given
    if asked == given:
        return
    for load in _loaders()[asked]:
        with pytest.raises(WrongFileError, match=rf"{re.escape(path.name)}`? is not {filekinds.NEEDED[asked]}: it looks "
                                                 rf"like .* — {_LOADER_WORDS[given]}"):
            load(path)


def test_check_weights_names_the_loader_of_a_file_in_the_wrong_place(golden_dir):
    from ovi_core.model_paths import OviWeightPaths, check_weight_files

    f = {part: golden_dir / name for part, name in _FILE_OF_PART.items()}
    rotated = OviWeightPaths(fusion=f["video_vae"], text_encoder=f["fusion"], video_vae=f["text_encoder"],
                             audio_vae=f["vocoder"], vocoder=f["audio_vae"])
    problems = {part: problem for part, _, problem, _ in check_weight_files(rotated, full=False)}
    given = {"fusion": "video_vae", "text_encoder": "fusion", "video_vae": "text_encoder", "audio_vae": "vocoder",
             "vocoder": "audio_vae"}
    for part, problem in problems.items():
        assert problem is not None and re.search(_LOADER_WORDS[given[part]], problem), (part, problem)


def test_one_tower_is_a_single_tower():
    assert filekinds.describe({"video_model.blocks.0.x": torch.zeros(1)}) == "a single tower of the Ovi fusion model"
