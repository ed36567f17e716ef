# Schedules follow character-ai/Ovi (Apache-2.0, ovi/utils/fm_solvers*.py); solvers: huggingface/diffusers (Apache-2.0).
"""Ovi's three flow-matching samplers, shaped like diffusers schedulers: ``set_timesteps``, then ``step`` per step.

Flow convention (Ovi/Wan): ``x_σ = (1 − σ)·x0 + σ·ε``, the model predicts the velocity ``v = ε − x0``, so the
denoised estimate at σ is ``x0 = x − σ·v``.

=========  ======================================================  =========================================
solver     schedule (N steps, shift s, ``shift(u) = s·u/(1+(s−1)u)``)  solver
=========  ======================================================  =========================================
unipc      σ_i = shift(linspace(0.999, 0, N+1)[:N]), σ_N = 0        diffusers ``UniPCMultistepScheduler`` fed
           model timestep = int64 truncation of 1000·σ_i            that exact σ list (order 2, bh2, x0-pred.,
                                                                     lower-order final step)
euler      diffusers ``FlowMatchEulerDiscreteScheduler(shift=s)``  the same class; float timesteps 1000·σ_i
dpm++      σ_i = shift(linspace(1, 0, N+1)[:N]), σ_N = 0            flow DPM-Solver++ 2M (midpoint), written
           model timestep = int64 truncation of 1000·σ_i            here: diffusers has no way to take this σ list
=========  ======================================================  =========================================

All three are bit-identical to the reference on the golden sampling cases (unipc, euler) or agree to float32
rounding (dpm++, checked against Ovi's ``FlowDPMSolverMultistepScheduler`` while writing this file).

One deliberate difference: every scheduler starts at step 0. The reference looks the first timestep up in its table
and, when the int timesteps of steps 0 and 1 coincide (unipc with more than ~250 steps), starts at step 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The flow time shift σ ↦ s·σ / (1 + (s − 1)·σ) (s > 1 spends more steps at high noise)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_sigmas(num_steps: int, shift: float) -> np.ndarray:
    """Ovi's UniPC schedule σ_0..σ_{N−1} (float64, without the final 0)."""
    # The reference takes the start from its float32 training table (1 − 1/1000 stored as float32), not 0.999.
    sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    return shift_sigmas(np.linspace(sigma_max, 0.0, num_steps + 1)[:num_steps], shift)


def dpm_sigmas(num_steps: int, shift: float) -> np.ndarray:
    """Ovi's DPM-Solver++ schedule σ_0..σ_{N−1} (float64, without the final 0); σ_0 = 1."""
    return shift_sigmas(np.linspace(1.0, 0.0, num_steps + 1)[:num_steps], shift)


class FlowScheduler:
    """Common shape: ``set_timesteps(N)`` fills ``timesteps`` [N] (what the model receives) and ``sigmas`` [N+1]
    (float32, last 0); ``step(velocity, sample)`` advances one step and returns the new sample.

    The step number is implicit (a counter, reset by ``set_timesteps``); the sample may have any shape.
    ``shift`` and the step count are taken as given: ``make_scheduler`` is where they are checked."""

    name: str = ""

    def __init__(self, shift: float):
        self.shift = float(shift)
        self.timesteps: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None
        self.step_index = 0

    @property
    def num_steps(self) -> int:
        return 0 if self.timesteps is None else len(self.timesteps)

    def set_timesteps(self, num_steps: int) -> None:
        raise NotImplementedError

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def denoised(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """x0 estimate at the *current* step (before calling ``step``): x − σ·v. Used for previews."""
        return sample - self.sigmas[self.step_index].item() * velocity

    def _advance(self) -> None:
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps() before step()")
        if self.step_index >= self.num_steps:
            raise RuntimeError(f"all {self.num_steps} steps are done; call set_timesteps() to start again")


class UniPCScheduler(FlowScheduler):
    """Ovi's default: flow UniPC, order 2, bh2, x0 prediction, lower-order final step, via diffusers."""

    name = "unipc"

    def set_timesteps(self, num_steps: int) -> None:
        from diffusers import UniPCMultistepScheduler

        self._impl = UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            solver_order=2,
            prediction_type="flow_prediction",
            predict_x0=True,
            solver_type="bh2",
            lower_order_final=True,
            final_sigmas_type="zero",
            use_flow_sigmas=True,
            flow_shift=1.0,  # our σ list is already shifted; 1.0 leaves it untouched (bit-exact)
        )
        # diffusers turns this into int64(1000·σ) (truncation) model timesteps and appends σ_N = 0, as Ovi does
        self._impl.set_timesteps(sigmas=unipc_sigmas(num_steps, self.shift))
        self._impl.set_begin_index(0)
        self.timesteps = self._impl.timesteps  # int64
        self.sigmas = self._impl.sigmas  # float32
        self.step_index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        self._advance()
        # diffusers' UniPC needs a leading batch dim (it stacks its history on dim 1)
        out = self._impl.step(velocity[None], self.timesteps[self.step_index], sample[None], return_dict=False)[0]
        self.step_index += 1
        return out[0]


class EulerScheduler(FlowScheduler):
    """Flow Euler, x ← x + (σ_{i+1} − σ_i)·v: diffusers' FlowMatchEulerDiscreteScheduler(shift) itself."""

    name = "euler"

    def set_timesteps(self, num_steps: int) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self._impl = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=self.shift)
        self._impl.set_timesteps(num_steps)
        self._impl.set_begin_index(0)
        self.timesteps = self._impl.timesteps  # float32 (the model gets float timesteps here)
        self.sigmas = self._impl.sigmas
        self.step_index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        self._advance()
        out = self._impl.step(velocity, self.timesteps[self.step_index], sample, return_dict=False)[0]
        self.step_index += 1
        return out


class DPMPlusPlusScheduler(FlowScheduler):
    """Flow DPM-Solver++ 2M (midpoint), data prediction, first order on the first and the last step.

    With λ = log(α/σ), α = 1 − σ, h = λ_t − λ_s and x0_k the denoised estimates, one step s → t is
        x_t = (σ_t/σ_s)·x_s + α_t·(1 − e^{−h})·(x0_s + ½·(x0_s − x0_prev)/r),   r = (λ_s − λ_prev)/h
    (the correction term is dropped on first-order steps). Coefficients are formed in float64 from σ ratios,
    which keeps σ = 1 (λ = −∞) and σ = 0 (λ = +∞) finite: e^{−h} = σ_t·α_s / (α_t·σ_s)."""

    name = "dpm++"

    def set_timesteps(self, num_steps: int) -> None:
        sigmas = dpm_sigmas(num_steps, self.shift)
        self.timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # truncation, like Ovi
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        self.step_index = 0
        self._prev_x0: torch.Tensor | None = None

    def _lambda(self, i: int) -> float:
        sigma = float(self.sigmas[i])
        if sigma >= 1.0:
            return -math.inf
        if sigma <= 0.0:
            return math.inf
        return math.log(1.0 - sigma) - math.log(sigma)

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        self._advance()
        i = self.step_index
        # the reference's solver runs in float32 whatever the latent dtype
        x = sample.float()
        x0 = x - self.sigmas[i] * velocity.float()  # denoised estimate at σ_s (σ as float32, as the reference)
        s_s, s_t = float(self.sigmas[i]), float(self.sigmas[i + 1])
        a_s, a_t = 1.0 - s_s, 1.0 - s_t
        exp_neg_h = s_t * a_s / (a_t * s_s)
        c_x = s_t / s_s
        c_d = a_t * (1.0 - exp_neg_h)

        first_order = self._prev_x0 is None or i == self.num_steps - 1  # final σ is 0: the last step is first order
        if first_order:
            d = x0
        else:
            lam_prev, lam_s, lam_t = self._lambda(i - 1), self._lambda(i), self._lambda(i + 1)
            r = (lam_s - lam_prev) / (lam_t - lam_s)  # +inf when σ_prev = 1: the correction vanishes, as upstream
            d = x0 + (0.5 / r) * (x0 - self._prev_x0)
        out = c_x * x + c_d * d

        self._prev_x0 = x0
        self.step_index += 1
        return out.to(sample.dtype)


# The solvers: name -> scheduler class. A new solver is a FlowScheduler subclass and its entry here; the CLI's
# --solver, the nodes' solver inputs and the checks read this table (through ovi_core.knobs.SOLVERS).
SCHEDULERS: dict[str, type[FlowScheduler]] = {cls.name: cls for cls in (UniPCScheduler, EulerScheduler,
                                                                        DPMPlusPlusScheduler)}


def make_scheduler(solver: str, num_steps: int, shift: float | None = None) -> FlowScheduler:
    """A ready scheduler (``set_timesteps`` done) for ``solver``, a name in ``SCHEDULERS``; ``shift`` None: the
    knob's default (ovi_core.knobs.SHIFT). The one check of the three (OviInputError); the classes take them as given.
    """
    from ovi_core import knobs  # knobs reads this module's SCHEDULERS table: imported here, not at the top

    shift = knobs.SHIFT.default if shift is None else shift
    knobs.check_sampling(solver=solver, steps=num_steps, shift=shift)
    scheduler = SCHEDULERS[solver](shift)
    scheduler.set_timesteps(num_steps)
    return scheduler
