"""train.precision auto: bf16 only where a probe finds it fast; the override; inference dtypes."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.train import precision as precision_module
from lmforge.train.precision import FAST_RATIO, choose_precision, cpu_bf16, inference_dtype

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """Fake probe rates (FLOP/s per dtype) in a fresh cache, with LMFORGE_CPU_BF16 unset."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LMFORGE_CPU_BF16", raising=False)
    rates: dict[torch.dtype, float] = {}
    monkeypatch.setattr(precision_module, "_probe_rate", lambda dtype: rates[dtype])
    precision_module._cpu_bf16.cache_clear()
    yield rates
    precision_module._cpu_bf16.cache_clear()


def test_auto_picks_fp32_where_the_probe_finds_bf16_slow(probe):
    """The AVX2-only AMD EPYC of issue 11: bf16 0.94 GFLOP/s against fp32 136."""
    probe.update({torch.bfloat16: 0.94e9, torch.float32: 136e9})
    choice = choose_precision("auto", CPU)
    assert choice.precision == "fp32" and not choice.cpu.fast
    assert choice.header() == "precision: fp32 (bf16 matmul 0.9 GFLOP/s vs fp32 136 on this CPU)"
    assert choice.to_dict()["cpu_bf16"]["bf16_flops"] == 0.94e9


def test_auto_picks_bf16_where_the_probe_finds_it_fast(probe):
    probe.update({torch.bfloat16: 1.2e12, torch.float32: 150e9})  # an AMX Xeon's order of magnitude
    choice = choose_precision("auto", CPU)
    assert choice.precision == "bf16" and choice.warning is None
    assert "bf16 matmul 1200 GFLOP/s vs fp32 150" in choice.reason


def test_bf16_barely_faster_than_fp32_is_not_worth_it(probe):
    probe.update({torch.bfloat16: 0.99 * FAST_RATIO * 100e9, torch.float32: 100e9})
    assert choose_precision("auto", CPU).precision == "fp32"


def test_explicit_bf16_on_a_slow_cpu_runs_with_the_measured_slowdown(probe):
    probe.update({torch.bfloat16: 1e9, torch.float32: 145e9})
    choice = choose_precision("bf16", CPU)
    assert choice.precision == "bf16"
    assert choice.warning.startswith("warning: bf16 matmuls are 145x slower than fp32 on this CPU")
    assert "\n" not in choice.warning


def test_the_probe_runs_once_per_machine(probe, monkeypatch):
    """The outcome is remembered in the cache: a new process (cache_clear) reads it back."""
    probe.update({torch.bfloat16: 1e9, torch.float32: 145e9})
    assert not cpu_bf16().fast
    precision_module._cpu_bf16.cache_clear()
    probe.update({torch.bfloat16: 1e12})  # would say fast if it were measured again
    assert not cpu_bf16().fast
    assert cpu_bf16(fresh=True).fast  # lmforge env --remeasure


@pytest.mark.parametrize("value, fast", [("0", False), ("1", True), ("no", False), ("true", True)])
def test_the_environment_variable_forces_the_outcome_without_measuring(probe, monkeypatch, value, fast):
    monkeypatch.setenv("LMFORGE_CPU_BF16", value)
    result = cpu_bf16()  # the fake probe has no rates: measuring would raise KeyError
    assert result.fast is fast and result.bf16_flops is None
    assert choose_precision("auto", CPU).precision == ("bf16" if fast else "fp32")
    assert "forced by LMFORGE_CPU_BF16" in choose_precision("auto", CPU).reason


def test_a_bad_override_and_fp16_on_a_cpu_are_one_line_errors(probe, monkeypatch):
    monkeypatch.setenv("LMFORGE_CPU_BF16", "maybe")
    with pytest.raises(UserError, match="LMFORGE_CPU_BF16 must be 0 or 1"):
        cpu_bf16()
    monkeypatch.setenv("LMFORGE_CPU_BF16", "0")
    with pytest.raises(UserError, match="fp16 training needs a GPU"):
        choose_precision("fp16", CPU)


@pytest.mark.parametrize("value", ["0", "1"])
def test_inference_dtype_follows_the_probe(probe, monkeypatch, value):
    """16-bit weights compute in fp32 where bf16 is slow (exact: a bf16 value is an fp32 value)."""
    monkeypatch.setenv("LMFORGE_CPU_BF16", value)
    assert inference_dtype(CPU, torch.float32) == torch.float32
    assert inference_dtype(CPU, torch.bfloat16) == (torch.bfloat16 if value == "1" else torch.float32)
    assert inference_dtype(CPU, torch.float16) == torch.float32


def test_the_real_probe_is_positive_and_leaves_the_rng_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert precision_module._probe_rate(torch.float32) > 0
    assert torch.equal(torch.get_rng_state(), state)
