"""lmforge env: what a user pastes into a bug report, every field there, the probe both ways."""

from __future__ import annotations

import json

import pytest

from tests.cli.cli_run import run


@pytest.mark.parametrize("forced", ["0", "1"])
def test_env_json_has_every_field(capsys, monkeypatch, forced):
    monkeypatch.setenv("LMFORGE_CPU_BF16", forced)
    code, out, err = run(capsys, "env", "--json")
    assert code == 0, err
    info = json.loads(out)
    for key in ("lmforge", "python", "torch", "device", "gpus", "threads", "cpu", "memory", "lmforge_will_use",
                "override", "cache"):
        assert key in info, key
    cpu = info["cpu"]
    for key in ("model", "cores", "capability", "flags", "bf16_flags", "native_bf16", "bf16_decided_by"):
        assert key in cpu, key
    assert cpu["native_bf16"] is (forced == "1") and cpu["bf16_decided_by"] == f"LMFORGE_CPU_BF16={forced}"
    assert cpu["matmul_peak_flops"]["fp32"] > 0 and cpu["matmul_peak_flops"]["bf16"] > 0
    assert info["memory"]["total_bytes"] > 0
    will = info["lmforge_will_use"]
    assert will["train_precision"] == ("bf16" if forced == "1" else "fp32")
    assert will["eval_and_generate_dtype_for_bf16_weights"] == will["train_precision"]
    assert will["int8_linears"].startswith("bf16 activations" if forced == "1" else "fp32 activations")
    assert info["override"] == {"LMFORGE_CPU_BF16": forced}


def test_env_table_and_help(capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_CPU_BF16", "0")
    code, out, err = run(capsys, "env")
    assert code == 0, err
    assert "native bf16" in out and "no (forced by LMFORGE_CPU_BF16=0)" in out and "GFLOP/s" in out
    code, out, _ = run(capsys, "env", "--help")
    assert code == 0 and "--remeasure" in out


def test_a_bad_override_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_CPU_BF16", "sometimes")
    code, out, err = run(capsys, "env", "--json")
    assert code == 2 and err.startswith("error: LMFORGE_CPU_BF16 must be 0 or 1") and err.count("\n") == 1
