"""Before step 1: strategy names, launch mode and the memory preflight (one process)."""

from __future__ import annotations

import pytest

from tests.cli.cli_run import run
from tests.distributed.launch import BASE, overrides

pytestmark = pytest.mark.distributed


def train(capsys, tmp_path, *extra):
    return run(capsys, "train", "--quiet", *overrides({**BASE, "out_dir": tmp_path, "name": "r"}), *extra)


def test_unknown_strategy_is_refused_with_the_choices(capsys, tmp_path):
    code, _, err = train(capsys, tmp_path, "--parallel.strategy", "zero4")
    assert code == 2
    assert err.startswith("error: config key parallel.strategy must be one of") and "zero3" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_sharded_strategy_outside_torchrun_says_how_to_launch(capsys, tmp_path):
    code, _, err = train(capsys, tmp_path, "--parallel.strategy", "zero3")
    assert code == 2
    assert "error: strategy zero3 needs several processes" in err and "torchrun --nproc_per_node N" in err
    assert not (tmp_path / "r").exists()


def test_a_run_predicted_not_to_fit_is_refused_with_the_numbers(capsys, tmp_path):
    code, out, err = train(capsys, tmp_path, "--parallel.device_memory", "1MB")
    assert code == 2
    assert "error: the run is predicted not to fit:" in err and "per device under single on 1" in err
    assert "(or --force to try anyway)" in err and len(err.strip().splitlines()) == 1
    assert out == ""  # refused before the data or the model exist: the error line is all (issue 12)
    assert not (tmp_path / "r").exists()


def test_force_runs_anyway(capsys, tmp_path):
    code, out, _ = train(capsys, tmp_path, "--parallel.device_memory", "1MB", "--force", "--train.max_steps", "1")
    assert code == 0
    assert "warning: predicted not to fit; going on because of --force" in out
    assert (tmp_path / "r" / "model.safetensors").is_file()


def test_plan_json_holds_the_per_device_prediction(capsys, tmp_path):
    import json

    code, _, _ = train(capsys, tmp_path, "--train.max_steps", "1")
    assert code == 0
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["strategy"] == "single" and plan["world_size"] == 1
    memory = plan["memory"]
    assert memory["weights"] == memory["gradients"] == 4 * plan["params"]  # fp32 weights and gradients
    assert memory["optimizer_states"] == 8 * plan["params"] and memory["master_weights"] == 0
