"""benchmarks/gpu_checks.py on this CPU: ``--device cpu --smoke`` runs every check's code path
with a 2-layer model (gloo for nccl, no compile), and its JSON must hold every key, finite
positive figures, MFU and roofline arithmetic that add up, and a DDP run equal to the single
one. The card matching is tested on the names ``torch.cuda.get_device_name()`` returns."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.plan.flops import palm_flops_per_token
from lmforge.plan.memory import training_memory
from lmforge.plan.specs import ModelSpec

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_checks.py"
KEYS = ("machine", "memory", "mfu", "fp16_gradscaler", "ddp_nccl", "decode")


def gpu_checks():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("gpu_checks")
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models; a spinning second thread only slows them
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_checks") / "gpu.json"
    done = run_script("--device", "cpu", "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(done.stdout) == written  # printed and written: the same one object
    return written


def numbers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


def test_every_check_ran_without_error(smoke):
    assert set(KEYS) <= set(smoke)
    for key in KEYS:
        assert "error" not in smoke[key], (key, smoke[key])
        assert smoke[key]["seconds"] > 0
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in numbers(smoke))  # "nan" would be a string
    assert smoke["machine"]["smoke"] is True and smoke["machine"]["device"] == "cpu"


def test_mfu_is_tokens_times_flops_over_peak(smoke):
    m = smoke["mfu"]
    for key in ("tokens_per_s", "flops_per_token", "peak_flops", "mfu", "timed_s"):
        assert m[key] > 0, key
    spec = ModelSpec(**m["spec"])
    assert m["flops_per_token"] == palm_flops_per_token(spec, m["seq_len"])
    assert m["mfu"] == pytest.approx(m["tokens_per_s"] * m["flops_per_token"] / m["peak_flops"], rel=1e-12)
    assert m["tokens_per_s"] == pytest.approx(m["timed_steps"] * m["micro_batch"] * m["seq_len"] / m["timed_s"])
    assert m["target"] == 0.40 and m["pass"] == (m["mfu"] >= 0.40)
    assert m["compiled"] is False and "note" in m


def test_memory_rows_compare_with_the_planner(smoke):
    rows = smoke["memory"]["rows"]
    assert len(rows) == 4 and {r["recompute"] for r in rows} == {"selective", "full"}
    for r in rows:
        assert r["measured_peak_bytes"] > 0 and r["planned_bytes"] > 0
        assert r["ratio_measured_over_planned"] == pytest.approx(r["measured_peak_bytes"] / r["planned_bytes"])
    worst = max(abs(r["ratio_measured_over_planned"] - 1) for r in rows)
    assert smoke["memory"]["worst_relative_error"] == pytest.approx(worst)
    assert smoke["memory"]["pass"] == (worst <= 0.10)
    spec = ModelSpec(**smoke["mfu"]["spec"])  # the first row's stand-in is the MFU check's model
    planned = training_memory(spec, micro_batch=rows[0]["micro_batch"], seq_len=rows[0]["seq_len"], precision="bf16",
                              strategy="single", recompute="selective", recipe="autocast", margin_fraction=0.0,
                              margin_fixed_bytes=0)
    assert rows[0]["planned_bytes"] == planned.total


def test_fp16_loss_falls_and_stays_finite(smoke):
    f = smoke["fp16_gradscaler"]
    assert f["finite"] and f["loss_fell"] and f["pass"]
    assert len(f["losses"]) == f["steps"] and f["last_loss"] < f["first_loss"]
    assert f["scale"] > 0 and f["skipped_steps"] < f["steps"]


def test_ddp_equals_single(smoke):
    d = smoke["ddp_nccl"]
    assert d["backend"] == "gloo" and d["world_size"] == 1 and d["wrapper"] == "DistributedDataParallel"
    assert d["allclose"] and d["pass"] and d["group_destroyed"]
    assert d["max_abs_weight_diff"] <= d["atol"] and d["losses_single"] == pytest.approx(d["losses_ddp"], abs=1e-6)


def test_decode_roofline_fraction_adds_up(smoke):
    d = smoke["decode"]
    for key in ("bytes_per_token", "copy_bandwidth_bytes_s", "roofline_tokens_per_s", "engine_tokens_per_s",
                "cache_loop_tokens_per_s", "engine_roofline_fraction", "cache_loop_roofline_fraction"):
        assert d[key] > 0, key
    assert d["roofline_tokens_per_s"] == pytest.approx(d["copy_bandwidth_bytes_s"] / d["bytes_per_token"])
    for name in ("engine", "cache_loop"):
        assert d[f"{name}_roofline_fraction"] == pytest.approx(d[f"{name}_tokens_per_s"] / d["roofline_tokens_per_s"])
    assert d["catalog_bandwidth_bytes_s"] is None and d["engine_catalog_roofline_fraction"] is None


def test_decode_bytes_per_token_is_weights_plus_mean_kv_cache():
    """124M GPT-2 in bf16: 124,439,808 params x 2 bytes; K and V of 12 layers x 768 x 2 bytes
    per cached position (Pope et al. 2022, Sec. 3.1), at the mean cached length 16 + 256 / 2."""
    from lmforge.plan.presets import get_preset

    checks = gpu_checks()
    expected = 124_439_808 * 2 + 2 * 12 * 768 * 2 * (16 + 128)
    assert checks.decode_bytes_per_token(get_preset("gpt2").spec, "bf16", 16, 256) == expected


@pytest.mark.parametrize(("name", "catalog", "tflops", "bandwidth_gbs"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM", 989.0, 3350.0),
    ("NVIDIA H100 SXM5 80GB", "H100-SXM", 989.0, 3350.0),
    ("NVIDIA H100 PCIe", "H100-PCIe", 756.0, 2000.0),
    ("NVIDIA H200", "H200", 989.0, 4800.0),
    ("NVIDIA GH200 480GB", "H200", 989.0, 4800.0),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB", 312.0, 2039.0),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB", 312.0, 1555.0),
    ("NVIDIA L4", "L4", 121.0, 300.0),
])
def test_card_names_find_their_catalog_peak(name, catalog, tflops, bandwidth_gbs):
    """Dense bf16 peaks and bandwidths of the NVIDIA data sheets (H100 2023: SXM 989 TF,
    3.35 TB/s; PCIe 756 TF, 2 TB/s; H200 2024: 989 TF, 4.8 TB/s; A100 2021: 312 TF), as
    lmforge.plan.hardware catalogs them."""
    card = gpu_checks().match_card(name)
    assert card["catalog"] == catalog and card["name"] == name
    assert card["bf16_peak_flops"] == tflops * 1e12 and card["bandwidth_bytes_s"] == bandwidth_gbs * 1e9


@pytest.mark.parametrize("name", ["NVIDIA GeForce GTX 1080", "NVIDIA L40S", "NVIDIA H100 NVL", "Tesla T4"])
def test_unknown_card_has_no_peak_and_says_why(name):
    card = gpu_checks().match_card(name)
    assert card["catalog"] is None and card["bf16_peak_flops"] is None and card["bandwidth_bytes_s"] is None
    assert "not in lmforge's GPU catalog" in card["note"] and name in card["note"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_in_one_line(capsys):
    gpu_checks().main([])  # returns: the script exits 0
    printed = capsys.readouterr()
    assert printed.out.strip().count("\n") == 0 and "no CUDA GPU" in printed.out and not printed.err
