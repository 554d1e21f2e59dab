"""How a quantized run computes here: by measurement, fp32 where bf16 is slow, the path said."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.quantize import paths
from lmforge.quantize.modules import Int4Linear, Int8Linear, QuantizedEmbedding
from lmforge.quantize.primitives import int8_dequantize, int8_quantize
from lmforge.quantize.report import quantize_run
from lmforge.runs import load_run
from lmforge.train import precision as precision_module


@pytest.fixture
def bf16(monkeypatch, tmp_path):
    """Set LMFORGE_CPU_BF16 for a test, in a fresh machine cache."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    precision_module._cpu_bf16.cache_clear()

    def force(value: str) -> None:
        monkeypatch.setenv("LMFORGE_CPU_BF16", value)

    yield force
    precision_module._cpu_bf16.cache_clear()


def test_the_fastest_fp32_path_is_the_measured_one(bf16, monkeypatch):
    bf16("0")
    timings = {"kernel-bf16": 3.0, "kernel-fp32": 1.0, "dequantize": 2.0}
    monkeypatch.setattr(paths, "path_seconds", lambda kind, path: timings[path])
    assert paths.fastest_fp32_path("int8") == "kernel-fp32"
    assert paths.fastest_fp32_path("int4") == "dequantize"  # int4 has no fp32 kernel path


def test_every_path_of_the_probe_layer_runs():
    for kind, options in paths.PATHS.items():
        for path in options:
            assert 0 < paths.path_seconds(kind, path) < float("inf"), (kind, path)


def test_an_int8_linear_on_the_bf16_kernel_path_matches_the_reference_for_fp32_callers():
    w = torch.randn(64, 128)
    q, s = int8_quantize(w)
    module = Int8Linear.from_codes(q, s, None)
    x = torch.randn(3, 128)
    ref = F.linear(x, int8_dequantize(q, s))
    assert module(x).equal(ref)  # no path set: dequantize, exact
    module.fp32_kernel_dtype = torch.bfloat16
    y = module(x)
    assert y.dtype == torch.float32
    assert float((y - ref).abs().max()) <= 2e-2 * float(ref.abs().max())


def _kept_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    """Dtypes of every float tensor but the quantized modules' codes and scales (their biases count)."""
    quantized = (Int8Linear, Int4Linear, QuantizedEmbedding)
    out = set()
    for module in model.modules():
        tensors = [getattr(module, "bias", None)] if isinstance(module, quantized) else [
            *module.parameters(recurse=False), *module.buffers(recurse=False)]
        out |= {t.dtype for t in tensors if t is not None and t.is_floating_point()}
    return out


@pytest.mark.parametrize("forced, dtype", [("0", torch.float32), ("1", torch.bfloat16)])
def test_a_quantized_run_computes_in_fp32_where_bf16_is_slow(tiny_runs, tmp_path, bf16, forced, dtype):
    """int8 and bf16 runs: kept tensors and activations in fp32 without fast bf16 (the int8
    linears on the path measured fastest), as written with it; the load says which."""
    bf16(forced)
    source = tiny_runs("tiny-gpt2")
    for precision in ("int8", "int4", "bf16"):
        out = tmp_path / f"{precision}-{forced}"
        report = quantize_run(source, precision, keep_embeddings=precision != "int4", out=out, max_tokens=512)
        run = load_run(out)
        assert _kept_dtypes(run.model) == {dtype}, precision
        name = "fp32" if dtype == torch.float32 else "bf16"
        assert run.compute.startswith(name) and report.compute == run.compute
        assert ("slow on this CPU" in run.compute) == (forced == "0")
        if precision == "int8":
            linears = [m for m in run.model.modules() if isinstance(m, Int8Linear)]
            assert linears and ("int8 linears: " in run.compute)
        if precision == "int4":
            assert any(isinstance(m, Int4Linear) for m in run.model.modules())
            assert all(m.dtype == dtype for m in run.model.modules() if isinstance(m, QuantizedEmbedding))
        ids = torch.randint(3, run.spec.vocab_size, (1, 8))
        with torch.no_grad():
            assert run.model(ids).dtype == dtype
        assert report.after.memory_bytes == report.after.planner_memory_bytes
