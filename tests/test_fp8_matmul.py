"""fp8 weights: the fp8 GEMM (torch._scaled_mm) where the device has fp8 tensor cores, the per-layer upcast elsewhere.

On the CPU nothing changes (the upcast path, bit for bit). The fp8 GEMM's numbers are checked on the CPU too (torch
has a CPU _scaled_mm), forcing the path the way a capability-8.9 GPU would take it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovi_core import layers
from ovi_core.layers import Linear, fp8_linear, fp8_matmul_supported, set_fp8_matmul


def _fp8_layer(out=64, inp=96, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    layer = Linear(inp, out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out, inp, generator=g) * 0.05)
        layer.bias.copy_(torch.randn(out, generator=g) * 0.1)
    layer.weight.data = layer.weight.data.to(torch.float8_e4m3fn)
    layer.compute_dtype = dtype
    x = torch.randn(3, 50, inp, generator=g).to(dtype)
    return layer, x


def test_cpu_keeps_the_upcast_numbers():
    assert not fp8_matmul_supported("cpu")
    layer, x = _fp8_layer()
    ref = F.linear(x, layer.weight.to(torch.bfloat16), layer.bias.to(torch.bfloat16))
    assert torch.equal(layer(x), ref)


def test_fp8_gemm_path_is_close_to_the_upcast(monkeypatch):
    layer, x = _fp8_layer()
    ref = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    calls = []
    scaled_mm = torch._scaled_mm
    monkeypatch.setattr(layers, "fp8_matmul_supported", lambda device: True)  # as on a capability-8.9 GPU
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: calls.append(1) or scaled_mm(*a, **k))
    out = layer(x)
    assert calls and out.dtype == torch.bfloat16 and out.shape == ref.shape
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    print(f"fp8 GEMM vs float32 upcast: relative error {rel:.3g}")
    assert rel < 0.05  # e4m3 activations (3 mantissa bits), float32 accumulation
    set_fp8_matmul(layer, False)  # off: the upcast again, bit for bit
    calls.clear()
    assert torch.equal(layer(x), F.linear(x, layer.weight.to(torch.bfloat16), layer.bias.to(torch.bfloat16)))
    assert not calls


@pytest.mark.parametrize("dtype", [torch.float32])
def test_float32_compute_never_takes_the_fp8_gemm(monkeypatch, dtype):
    layer, x = _fp8_layer(dtype=dtype)
    monkeypatch.setattr(layers, "fp8_matmul_supported", lambda device: True)
    assert torch.equal(layer(x), F.linear(x, layer.weight.float(), layer.bias.float()))


def test_fp8_linear_scales_large_inputs():
    """Inputs beyond e4m3's range (448) are scaled, not clipped."""
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(32, 64, generator=g) * 0.05).to(torch.float8_e4m3fn)
    x = (torch.randn(16, 64, generator=g) * 5000).to(torch.bfloat16)
    ref = x.float() @ w.float().t()
    rel = ((fp8_linear(x, w, None, torch.bfloat16).float() - ref).norm() / ref.norm()).item()
    assert rel < 0.05
