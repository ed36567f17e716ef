"""Sample-rate conversion, the one resampler of the project (audio decoder outputs, audio inputs, the mp4 writer).

torchaudio's windowed-sinc resampler when torchaudio is importable (it always is inside ComfyUI); otherwise FFmpeg's
libswresample through PyAV (a dependency anyway, for muxing). The output always has exactly
round(N * to_sr / from_sr) samples per channel and stays time-aligned with the input.
"""

from __future__ import annotations

import torch

from .errors import OviError, OviInputError


def resample_audio(waveform: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """waveform [B, C, N] (or [C, N] / [N]) at from_sr -> float32 [..., round(N * to_sr / from_sr)] at to_sr."""
    if not isinstance(waveform, torch.Tensor) or waveform.dim() not in (1, 2, 3):
        raise OviInputError(
            f"waveform must be a tensor [batch, channels, samples]; got {getattr(waveform, 'shape', waveform)!r}"
        )
    from_sr, to_sr = int(from_sr), int(to_sr)
    if from_sr <= 0 or to_sr <= 0:
        raise OviInputError(f"sample rates must be positive; got {from_sr} -> {to_sr}")
    if from_sr == to_sr:
        return waveform.float().clone()
    n_out = round(waveform.shape[-1] * to_sr / from_sr)
    rows = waveform.detach().float().cpu().reshape(-1, waveform.shape[-1])
    try:
        out = _resample_torchaudio(rows, from_sr, to_sr, n_out)
    except (ImportError, OSError):  # not installed, or its compiled part does not match the installed torch
        out = _resample_pyav(rows, from_sr, to_sr, n_out)
    return out.reshape(waveform.shape[:-1] + (n_out,)).to(waveform.device)


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to n samples (resamplers may differ by a sample or two at the end)."""
    return x[..., :n] if x.shape[-1] >= n else torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def _resample_torchaudio(rows: torch.Tensor, from_sr: int, to_sr: int, n_out: int) -> torch.Tensor:
    import torchaudio.functional as taf  # ImportError / OSError handled by the caller

    return _fit(taf.resample(rows, from_sr, to_sr), n_out)


def _resample_pyav(rows: torch.Tensor, from_sr: int, to_sr: int, n_out: int) -> torch.Tensor:
    try:
        import av
    except ImportError as exc:
        raise OviError("resampling audio needs torchaudio or PyAV: pip install av") from exc
    import numpy as np

    out = torch.empty(rows.shape[0], n_out)
    for i, row in enumerate(rows.numpy()):
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=to_sr)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(row[None, :]), format="fltp", layout="mono")
        frame.sample_rate = from_sr
        chunks = [f.to_ndarray()[0] for f in resampler.resample(frame) + resampler.resample(None)]  # + flush
        res = torch.from_numpy(np.concatenate(chunks)) if chunks else torch.zeros(0)
        out[i] = _fit(res, n_out)
    return out
