"""Time one sampling step's forward (the batched positive/negative pass, SLG on one row) with sequence parallel over
1..N CPU processes (gloo on the loopback, one torch thread each), on a scaled Ovi model with random weights.

    .venv/bin/python benchmarks/sp_step.py                     # 1, 2, 3 ranks
    .venv/bin/python benchmarks/sp_step.py --max-ranks 4 --dim 768 --layers 4

The CPU numbers show the overhead of the all-to-alls and how the split work scales on this machine's cores; a
GPU run is what docs/multi_gpu.md estimates. Every rank checks its output against rank 0's single-process one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, opts: dict, queue) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from ovi_core.config import FusionConfig
        from ovi_core.fusion import OviFusion
        from ovi_core.parallel import SequenceParallel
        from ovi_core.weights import init_weights_seeded

        comm = [0.0]  # seconds inside the all-to-alls (the collective itself, waiting for the slowest rank included)
        inner = SequenceParallel._all_to_all

        def timed(self, *args):
            start = time.perf_counter()
            try:
                return inner(self, *args)
            finally:
                comm[0] += time.perf_counter() - start

        SequenceParallel._all_to_all = timed

        cfg = FusionConfig.scaled(dim=opts["dim"], ffn_dim=4 * opts["dim"], num_heads=opts["heads"],
                                  num_layers=opts["layers"])
        model = init_weights_seeded(OviFusion(cfg), 0).eval().requires_grad_(False)
        model.set_sequence_parallel()
        g = torch.Generator().manual_seed(0)
        f, h, w = opts["grid"]
        video = torch.randn(2, 48, f, 2 * h, 2 * w, generator=g)
        audio = torch.randn(2, opts["audio"], 20, generator=g)
        text = model.prepare_text([torch.randn(20, 4096, generator=g)] * 2, [torch.randn(20, 4096, generator=g)] * 2)
        t, mask = torch.tensor([800, 800]), torch.tensor([False, True])

        def step():
            return model(video, audio, t, text=text, slg_layer=1, skip_mask=mask)

        out = step()  # warm-up
        times = []
        comm[0] = 0.0
        for _ in range(opts["reps"]):
            dist.barrier()
            start = time.perf_counter()
            step()
            dist.barrier()
            times.append(time.perf_counter() - start)
        if rank == 0:
            queue.put({"ranks": world, "seconds": statistics.median(times), "comm_seconds": comm[0] / opts["reps"],
                       "video": out[0].flatten()[:4096].tolist()})
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-ranks", type=int, default=3)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=12, help="must divide by every rank count tried")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--grid", type=int, nargs=3, default=(8, 12, 12), help="video token grid F H W")
    p.add_argument("--audio", type=int, default=157, help="audio tokens")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    opts = dict(dim=a.dim, heads=a.heads, layers=a.layers, grid=tuple(a.grid), audio=a.audio, reps=a.reps)
    ctx = mp.get_context("spawn")
    rows, base = [], None
    for n in range(1, a.max_ranks + 1):
        if a.heads % n:
            continue
        queue = ctx.Queue()
        mp.start_processes(_worker, args=(n, _free_port(), opts, queue), nprocs=n, start_method="spawn")
        r = queue.get()
        video = r.pop("video")
        if base is None:
            base = (r["seconds"], video)
        err = max(abs(x - y) for x, y in zip(video, base[1]))
        r.update(speedup=base[0] / r["seconds"], max_abs_diff_vs_1=err)
        rows.append(r)
    tokens = a.grid[0] * a.grid[1] * a.grid[2]
    print(f"one step (batch 2, SLG row) of a {a.layers}-block dim-{a.dim} {a.heads}-head model, {tokens} video + "
          f"{a.audio} audio tokens, {os.cpu_count()} CPU cores, 1 thread per rank:")
    for r in rows:
        print(f"  {r['ranks']} rank(s): {r['seconds'] * 1000:8.1f} ms  x{r['speedup']:.2f}  of which all-to-all "
              f"{r['comm_seconds'] * 1000:6.1f} ms  (max |diff| vs 1 rank {r['max_abs_diff_vs_1']:.1e})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
