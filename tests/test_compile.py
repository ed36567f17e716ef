"""torch.compile of the fusion model: ``ovi_core.compile.compile_fusion`` (the CLI's --compile) and core ComfyUI's
TorchCompileModel on the Ovi MODEL (inside ComfyUI's venv: tests/test_in_comfy_venv.py runs this file there).

Equality with the eager forward to 1e-5 on the demo model. The tests compile with the ``aot_eager`` backend (the
traced graphs, run by PyTorch's eager kernels): inductor's C++ code generation takes ~100 s on this 2-core machine for
the demo model (measured once: equal to 1.1e-6). The same compiled object and guards are exercised either way."""

from __future__ import annotations

import pytest
import torch

try:  # first where ComfyUI is importable (sets it up for the CPU); elsewhere its tests skip
    from tests import comfy_inproc
except pytest.skip.Exception:
    comfy_inproc = None

from ovi_core.compile import compile_fusion
from ovi_core.sampler import make_noise, sample_joint

F, H, W, L = 3, 4, 4, 13
SEED, TOL = 7, 1e-5
BACKEND = "aot_eager"


def _inputs():
    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    return v[None], a[None]


def test_compiled_forward_equals_eager(fusion, texts):
    v, a = _inputs()
    text = fusion.prepare_text([texts.positive, texts.video_negative], [texts.positive, texts.audio_negative])
    compiled = compile_fusion(fusion, backend=BACKEND)
    assert compiled.cfg is fusion.cfg and compiled.device == fusion.device  # the model's attributes, through it
    for t in (900.0, 420.5):
        args = (v.repeat(2, 1, 1, 1, 1), a.repeat(2, 1, 1), torch.tensor([t, t]))
        kw = dict(text=text, slg_layer=1, skip_mask=torch.tensor([False, True]))
        ref, out = fusion(*args, **kw), compiled(*args, **kw)
        err = max((o - r).abs().max().item() for o, r in zip(out, ref))
        print(f"t {t}: max |compiled - eager| {err:.3g}")
        assert err < TOL


def test_sampling_with_the_compiled_model(fusion, texts):
    v, a = make_noise((48, F, H, W), (L, 20), SEED)
    kw = dict(video_noise=v, audio_noise=a, solver="unipc", steps=3, slg_layer=1)
    ref = sample_joint(fusion, texts, **kw)
    out = sample_joint(compile_fusion(fusion, backend=BACKEND), texts, **kw)
    assert max((o - r).abs().max().item() for o, r in zip(out, ref)) < TOL


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        compile_fusion(torch.nn.Linear(2, 2), mode="fast")


# ---- core TorchCompileModel on the Ovi MODEL (ComfyUI's venv) ----------------------------------------------------
def test_core_torch_compile_model_node(fusion, texts, monkeypatch):
    if comfy_inproc is None:
        pytest.skip("ComfyUI is not importable here (tests/test_in_comfy_venv.py runs this in ComfyUI's venv)")

    native = comfy_inproc.load_nodes_module("native_model")
    _, node_file = comfy_inproc.load_core("comfy_extras/nodes_torch_compile.py")
    import comfy.nested_tensor
    import comfy.samplers
    import comfy_api.torch_helpers.torch_compile as helper

    compiled_objects, torch_compile = [], torch.compile

    def compile_(model, backend, **kw):  # the node's call, with the test backend (see the module docstring)
        compiled_objects.append(model)
        return torch_compile(model, backend=BACKEND, **kw)

    monkeypatch.setattr(helper.torch, "compile", compile_, raising=True)  # helper's `torch` is the torch module
    try:
        base = native.build_model_patcher(fusion, slg_layer=1)
        compiled_model = node_file.TorchCompileModel.execute(base, "inductor")[0]
    finally:
        monkeypatch.undo()
    assert compiled_objects == [fusion]  # what it compiles: the MODEL's diffusion_model, the OviFusion itself

    def run(model):
        v, a = make_noise((48, F, H, W), (L, 20), SEED)
        noise = comfy.nested_tensor.NestedTensor((v[None], a.T[None].contiguous()))
        positive = [[texts.positive[None], {}]]
        negative = [[texts.video_negative[None], {native.AUDIO_CONTEXT_KEY: texts.audio_negative[None]}]]
        guider = native.OviGuider(model, 4.0, 3.0)
        guider.set_conds(positive, negative, negative)
        latent = native.empty_av_latent(F, H, W, L)["samples"]
        return guider.sample(noise, latent, native.ovi_sampler("unipc"), native.ovi_sigmas("unipc", 3), seed=SEED,
                             disable_pbar=True).unbind()

    ref, out = run(base), run(compiled_model)
    err = max((o - r).abs().max().item() for o, r in zip(out, ref))
    print(f"TorchCompileModel ({BACKEND}), 3 unipc steps with CFG + SLG: max |compiled - eager| {err:.3g}")
    assert err < TOL
    assert base.model.diffusion_model is fusion  # the compiled module is swapped in only while the model runs


# ---- the command line: --compile and --cache-threshold ------------------------------------------------------------
# (defined in the pack's own venv only: in ComfyUI's venv this file runs for the core nodes, and a skip there fails
# tests/test_in_comfy_venv.py)
if comfy_inproc is None:
    def test_cli_compile_and_cache_threshold_reach_the_sampler(tmp_path, monkeypatch):
        import ovi_core.compile
        import ovi_core.pipeline
        from ovi_core import cli

        monkeypatch.delenv(cli.ENV_CKPT_DIR, raising=False)
        monkeypatch.delenv(cli.ENV_COMFY_MODELS, raising=False)
        seen = {}
        real_compile, real_sample = ovi_core.compile.compile_fusion, ovi_core.pipeline.sample_joint

        def compile_(model, **kw):
            seen["compiled"] = model
            return real_compile(model, backend=BACKEND)

        def sample(model, *args, **kw):
            seen["model"], seen["cache_threshold"] = model, kw["cache_threshold"]
            return real_sample(model, *args, **kw)

        monkeypatch.setattr(ovi_core.compile, "compile_fusion", compile_)
        monkeypatch.setattr(ovi_core.pipeline, "sample_joint", sample)
        code = cli.main(["generate", "--prompt", "A cat. <AUDCAP>Piano.<ENDAUDCAP>", "--steps", "2", "--compile",
                         "--cache-threshold", "0.25", "--out", str(tmp_path / "x.mp4"), "--no-progress"])
        assert code == 0 and (tmp_path / "x.mp4").is_file()
        assert seen["cache_threshold"] == 0.25
        assert isinstance(seen["model"], torch._dynamo.eval_frame.OptimizedModule)
        assert seen["model"]._orig_mod is seen["compiled"]
