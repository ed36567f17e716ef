"""Sequence parallel (ovi_core.parallel) on 2 and 3 gloo ranks on the loopback, against the single-process model.

Each spawned rank builds the same model, computes the single-process result itself (no group), then the sharded one,
and writes the largest differences to a file that the test reads. The golden tiny config has 2 heads, so 3 ranks run
the same architecture with 6 heads (the head count must divide by the number of ranks; 3 ranks on 2 heads is refused,
tested too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(heads: int, golden_dir: str):
    from ovi_core.config import FusionConfig
    from ovi_core.fusion import OviFusion
    from ovi_core.weights import init_weights_seeded

    if heads == 2:  # the golden tiny model itself
        from conformance.cases.forward import tiny_model

        return tiny_model(Path(golden_dir))
    model = init_weights_seeded(OviFusion(FusionConfig.scaled(dim=96, ffn_dim=128, num_heads=heads, num_layers=3)), 0)
    return model.eval().requires_grad_(False)


def _inputs(batch: int, grid, audio_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    video = torch.randn(batch, 48, f, h, w, generator=g)
    audio = torch.randn(batch, audio_len, 20, generator=g)
    ctx_v = [torch.randn(7 + i, 4096, generator=g) for i in range(batch)]
    ctx_a = [torch.randn(5 + i, 4096, generator=g) for i in range(batch)]
    return video, audio, ctx_v, ctx_a


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _worker(rank: int, world: int, port: int, heads: int, golden_dir: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from ovi_core.errors import OviInputError
        from ovi_core.sampler import PromptEmbeddings, sample_joint

        results: dict[str, float | bool] = {}
        if world % 2 == 1:  # the golden 2-head model cannot split its heads over an odd number of ranks
            try:
                _model(2, golden_dir).set_sequence_parallel()
                results["refuses_indivisible_heads"] = False
            except OviInputError as exc:
                results["refuses_indivisible_heads"] = "divisible" in str(exc)
        model = _model(heads, golden_dir)

        def both(fn, *args, **kwargs):
            model.set_sequence_parallel(enabled=False)
            single = fn(*args, **kwargs)
            model.set_sequence_parallel()
            return single, fn(*args, **kwargs)

        # video grids: (3, 4, 4) -> 12 tokens and 18 audio tokens split evenly over 2 and 3 ranks;
        # (5, 2, 10) -> 25 tokens and 23 audio tokens split unevenly over both
        cases = {
            "even": dict(grid=(3, 4, 4), audio_len=18, kw={}),
            "uneven": dict(grid=(5, 2, 10), audio_len=23, kw={}),
            "uneven_i2v": dict(grid=(5, 2, 10), audio_len=23, kw=dict(first_frame_is_clean=True)),
            # clean prefixes that cross a shard boundary (10 of 25 video tokens, 13 of 23 audio steps)
            "uneven_clean_prefixes": dict(grid=(5, 2, 10), audio_len=23, kw=dict(clean_video_frames=2,
                                                                                 clean_audio_steps=13)),
            "even_i2v": dict(grid=(3, 4, 4), audio_len=18, kw=dict(first_frame_is_clean=True)),
        }
        for name, c in cases.items():
            video, audio, cv, ca = _inputs(1, c["grid"], c["audio_len"], 3)
            (sv, sa), (pv, pa) = both(model, video, audio, torch.tensor([700]), cv, ca, **c["kw"])
            results[f"forward_{name}"] = max(_err(sv, pv), _err(sa, pa))

        # SLG rows: a batch of two (positive, negative), block 1 skipped in the negative row only; and a fusion cut
        video, audio, cv, ca = _inputs(2, (5, 2, 10), 23, 4)
        (sv, sa), (pv, pa) = both(model, video, audio, torch.tensor([500, 500]), cv, ca, slg_layer=1,
                                  skip_mask=torch.tensor([False, True]), first_frame_is_clean=True)
        results["forward_slg_rows"] = max(_err(sv, pv), _err(sa, pa))
        (sv, sa), (pv, pa) = both(model, video[:1], audio[:1], 300.0, cv[:1], ca[:1], fusion_cut="audio_to_video")
        results["forward_fusion_cut"] = max(_err(sv, pv), _err(sa, pa))

        # a whole sampling run: 3 UniPC steps, batched CFG with SLG on block 1, image-to-video
        g = torch.Generator().manual_seed(5)
        text = PromptEmbeddings(torch.randn(7, 4096, generator=g), torch.randn(5, 4096, generator=g),
                                torch.randn(6, 4096, generator=g))
        first = torch.randn(48, 1, 2, 10, generator=g)
        (sv, sa), (pv, pa) = both(sample_joint, model, text, video_shape=(48, 5, 2, 10), audio_shape=(23, 20), seed=11,
                                  steps=3, slg_layer=1, first_frame_latent=first)
        results["sampling_i2v_cfg_slg"] = max(_err(sv, pv), _err(sa, pa))
        (sv, sa), (pv, pa) = both(sample_joint, model, text, video_shape=(48, 3, 4, 4), audio_shape=(18, 20), seed=12,
                                  steps=3, slg_layer=1, solver="euler")
        results["sampling_t2v_euler"] = max(_err(sv, pv), _err(sa, pa))
        Path(f"{out}.{rank}.json").write_text(json.dumps(results))
        dist.barrier()  # no rank tears the group down while another still talks
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world, heads", [(2, 2), (3, 6)])
def test_sharded_equals_one_process(golden_dir, tmp_path, world, heads):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(world, _free_port(), heads, str(golden_dir), out), nprocs=world, join=True)
    for rank in range(world):
        results = json.loads(Path(f"{out}.{rank}.json").read_text())
        errors = {k: v for k, v in results.items() if not isinstance(v, bool)}
        assert len(errors) == 9, results
        assert max(errors.values()) < TOL, (rank, results)
        assert all(v for v in results.values() if isinstance(v, bool)), results


def _frames(path: Path) -> torch.Tensor:
    import av

    with av.open(str(path)) as f:
        return torch.stack([torch.from_numpy(fr.to_ndarray(format="rgb24")) for fr in f.decode(video=0)])


def test_torchrun_demo_writes_the_one_process_clip(tmp_path):
    """`torchrun --nproc-per-node 2 -m ovi_core generate` (gloo, loopback), image-to-video: rank 0 encodes the text
    and the image, the other rank receives them; rank 0 writes the clip one process writes (the demo's 124 video and
    157 audio tokens split unevenly), the other rank writes nothing."""
    import numpy as np
    from PIL import Image

    from ovi_core.cli import main

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "first.png")
    args = ["generate", "-p", "a cat plays the piano <AUDCAP>piano music<ENDAUDCAP>", "--steps", "2", "--seed", "5",
            "--image", str(tmp_path / "first.png"), "--no-progress", "-q"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("OVI_CKPT_DIR", "OVI_COMFY_MODELS"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "ovi_core", *args, "-o", str(tmp_path / "sp" / "clip.mp4")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == ["clip.mp4"]
    assert run.stdout.count("wrote ") == 1, run.stdout  # rank 0 only
    assert main([*args, "-o", str(tmp_path / "one" / "clip.mp4")]) == 0
    sharded, single = _frames(tmp_path / "sp" / "clip.mp4"), _frames(tmp_path / "one" / "clip.mp4")
    assert sharded.shape == single.shape == (121, 64, 64, 3)
    assert int((sharded.int() - single.int()).abs().max()) <= 1


def test_sp_size_without_torchrun_is_a_usage_error(tmp_path, monkeypatch, capsys):
    from ovi_core.cli import EXIT_USAGE, main

    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["generate", "-p", "a cat", "--sp-size", "2", "-o", str(tmp_path / "x.mp4")]) == EXIT_USAGE
    assert "torchrun --nproc-per-node 2" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def _pipeline_worker(rank: int, port: int, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        from ovi_core.pipeline import OviPipeline

        pipe = OviPipeline.demo(process_group=dist.group.WORLD)
        loaded = []
        for name, part in pipe.parts.items():
            part._load = lambda load=part._load, name=name: (loaded.append(name), load())[1]
        result = pipe.generate("a cat plays the piano <AUDCAP>piano music<ENDAUDCAP>", steps=1)
        Path(f"{out}.{rank}.json").write_text(json.dumps({"loaded": sorted(loaded), "result": result is not None}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_pipeline_loads_on_rank_0_only_what_only_rank_0_runs(tmp_path):
    """OviPipeline(process_group=): rank 0 encodes the text and decodes; the other rank loads the fusion model only."""
    out = str(tmp_path / "loaded")
    mp.spawn(_pipeline_worker, args=(_free_port(), out), nprocs=2, join=True)
    main, other = (json.loads(Path(f"{out}.{r}.json").read_text()) for r in (0, 1))
    assert main == {"loaded": ["audio_decoder", "fusion", "text_encoder", "video_vae"], "result": True}
    assert other == {"loaded": ["fusion"], "result": False}
