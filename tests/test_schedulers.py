"""The three flow schedulers, proven step by step against the reference's recorded sampling runs (no model needed)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.errors import OviInputError
from ovi_core.knobs import SOLVERS
from ovi_core.schedulers import dpm_sigmas, make_scheduler, unipc_sigmas

CASES = {0: "unipc", 1: "unipc", 2: "euler"}


# ---- schedules -------------------------------------------------------------------------------------------------
def test_unipc_schedule_matches_reference_table():
    s = make_scheduler("unipc", 5, 5.0)
    assert s.timesteps.dtype == torch.int64
    assert s.timesteps.tolist() == [999, 952, 882, 768, 555]  # int64 truncation of 1000·σ, not rounding
    torch.testing.assert_close(
        s.sigmas, torch.tensor([0.9997998, 0.9521540, 0.8820933, 0.7689347, 0.5552468, 0.0]), atol=1e-7, rtol=0
    )
    assert make_scheduler("unipc", 4, 5.0).timesteps.tolist() == [999, 937, 833, 624]


def test_unipc_schedule_formula():
    n, s = 50, 5.0
    u = torch.linspace(0.999, 0, n + 1, dtype=torch.float64)[:n]
    # 1e-7: the reference starts from float32(0.999), not 0.999
    torch.testing.assert_close(torch.from_numpy(unipc_sigmas(n, s)), s * u / (1 + (s - 1) * u), atol=1e-7, rtol=0)
    sched = make_scheduler("unipc", n, s)
    assert len(sched.timesteps) == n and len(sched.sigmas) == n + 1 and sched.sigmas[-1] == 0


def test_euler_schedule_is_diffusers_flow_match():
    s = make_scheduler("euler", 4, 5.0)
    assert s.timesteps.dtype == torch.float32  # the model gets float timesteps with euler
    torch.testing.assert_close(s.sigmas, torch.tensor([1.0, 0.9097071, 0.7173175, 0.0244141, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.timesteps, s.sigmas[:-1] * 1000)


def test_dpm_schedule():
    s = make_scheduler("dpm++", 3, 5.0)
    assert s.timesteps.dtype == torch.int64
    assert s.timesteps.tolist() == [1000, 909, 714]
    assert dpm_sigmas(3, 5.0)[0] == 1.0
    assert make_scheduler("dpm++", 6, 5.0).timesteps.tolist() == [1000, 961, 909, 833, 714, 500]


# ---- golden: every recorded step -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_steps_match_golden(golden_dir, case):
    d = load_file(str(golden_dir / f"sampling_case_{case}.safetensors"))
    n = d["sched.timesteps"].numel()
    video_s, audio_s = make_scheduler(CASES[case], n, 5.0), make_scheduler(CASES[case], n, 5.0)
    assert torch.equal(video_s.timesteps, d["sched.timesteps"])
    torch.testing.assert_close(video_s.sigmas, d["sched.sigmas"], atol=1e-7, rtol=0)
    for i in range(n):
        for mod, sched in (("video", video_s), ("audio", audio_s)):
            out = sched.step(d[f"step{i}.{mod}_guided"], d[f"step{i}.{mod}_in"])
            torch.testing.assert_close(out, d[f"step{i}.{mod}_out"], atol=1e-6, rtol=0, msg=f"step {i} {mod}")


# ---- dpm++: values recorded from Ovi's FlowDPMSolverMultistepScheduler (toy velocity field) ---------------------
def _toy_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    return torch.tanh(x + a) - 0.3 * x * (t / 1000.0)


@pytest.mark.parametrize(
    "steps, expected",
    [
        (3, [-1.4517266, -0.7692383, -0.2109273, 0.0069613, -0.0069613, 0.2109273, 0.7692383, 1.4517266]),
        (6, [-1.3563619, -0.7051373, -0.2010016, -0.0122691, 0.0122691, 0.2010016, 0.7051373, 1.3563619]),
    ],
)
def test_dpm_matches_reference_values(steps, expected):
    # first step from σ = 1 (λ = -inf), second-order steps in between, first-order final step to σ = 0
    sched = make_scheduler("dpm++", steps, 5.0)
    x = torch.linspace(-2, 2, 8).reshape(2, 4)
    for t in sched.timesteps:
        x = sched.step(_toy_velocity(x, t.float()), x)
    torch.testing.assert_close(x.flatten(), torch.tensor(expected), atol=2e-6, rtol=0)


# ---- properties --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_exact_velocity_lands_on_data(solver, steps):
    """With the exact flow velocity of a single data point x0, v = (x − x0)/σ, every solver ends exactly at x0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, generator=g)
    x = torch.randn(3, 5, generator=g)
    sched = make_scheduler(solver, steps, 5.0)
    for i in range(steps):
        x = sched.step((x - x0) / sched.sigmas[i], x)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_denoised_estimate():
    sched = make_scheduler("unipc", 5, 5.0)
    x, v = torch.ones(2), torch.full((2,), 2.0)
    torch.testing.assert_close(sched.denoised(v, x), x - sched.sigmas[0] * v)


def test_step_past_the_end_is_an_error():
    sched = make_scheduler("euler", 1, 5.0)
    sched.step(torch.zeros(2), torch.zeros(2))
    with pytest.raises(RuntimeError, match="steps are done"):
        sched.step(torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize(
    "solver, steps, shift, match",
    [
        ("ddim", 10, 5.0, "unknown solver"),
        ("unipc", 0, 5.0, "between 1 and"),
        ("unipc", 1001, 5.0, "between 1 and"),
        ("unipc", 2.5, 5.0, "whole number"),
        ("unipc", True, 5.0, "whole number"),
        ("euler", 10, 0.0, "shift"),
        ("dpm++", 10, float("nan"), "shift"),
        ("unipc", 10, "5", "shift"),
    ],
)
def test_bad_arguments(solver, steps, shift, match):
    with pytest.raises(OviInputError, match=match):
        make_scheduler(solver, steps, shift)
