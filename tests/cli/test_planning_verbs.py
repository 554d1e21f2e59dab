"""The planning verbs end to end: real answers, JSON, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmforge.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# ---- answers ---------------------------------------------------------------------------


def test_memory_llama_2_7b(capsys):
    """KV cache of Llama-2-7B in bf16: 2 x 32 layers x 32 heads x 128 x 2 bytes = 524,288 B/token."""
    data = run_json(capsys, "memory", "llama-2-7b", "--gpus", "8xH100")
    assert data["params"]["total"] == 6_738_415_616
    assert data["kv_cache"]["per_token_bytes"] == 524_288
    by_strategy = {m["strategy"]: m for m in data["training_per_gpu"]}
    assert list(by_strategy) == ["ddp", "zero1", "zero2", "zero3"]
    # Mixed-precision AdamW model states: 16 bytes/param under DDP (ZeRO, Sec. 3.1).
    assert by_strategy["ddp"]["model_states"] == 16 * 6_738_415_616
    assert data["least_sharding"] == next(s for s, fits in data["fits"].items() if fits)


def test_memory_500b_in_one_command(capsys):
    """'How much GPU memory to train a 500B model': model states alone are 16 B/param = 8 TB."""
    code, out, err = run(capsys, "memory", "--params", "500B", "--gpus", "64xH100")
    assert code == 0, err
    assert "500B (llama-style)" in out and "does not fit" not in out.splitlines()[0]
    data = run_json(capsys, "memory", "--params", "500B", "--gpus", "64xH100")
    assert data["params"]["total"] == pytest.approx(500e9, rel=0.10)
    ddp = data["training_per_gpu"][0]
    assert ddp["model_states"] == 16 * data["params"]["total"]
    assert data["rule_of_thumb"]["rule_train_bytes"] == pytest.approx(80 * data["params"]["total"])


def test_memory_suggests_least_sharding_and_gpu_count(capsys):
    code, out, _ = run(capsys, "memory", "llama-65b", "--gpus", "8xA100-80GB")
    assert code == 0
    assert "fits" in out
    data = run_json(capsys, "memory", "llama-2-70b", "--gpus", "2xL4", "--recompute", "full", "--seq-len", "2048")
    assert data["least_sharding"] is None and data["zero3_gpus_needed"] > 2
    # At 4,096 tokens without full recompute, activations alone overflow a 24 GiB L4.
    code, out, _ = run(capsys, "memory", "llama-2-70b", "--gpus", "2xL4")
    assert code == 0 and "activations alone overflow one GPU" in out


def test_plan_budget_forms_agree(capsys):
    """The same compute three ways: FLOPs; GPUs x days x MFU; dollars at a price."""
    flops = 64 * 989e12 * 0.4 * 14 * 86400
    by_flops = run_json(capsys, "plan", "--flops", f"{flops:.6e}", "--gpus", "64xH100", "--laws", "20x")
    by_days = run_json(capsys, "plan", "--gpus", "64xH100", "--days", "14", "--mfu", "0.4", "--laws", "20x")
    dollars = 64 * 14 * 24 * 2.5
    by_money = run_json(capsys, "plan", "--dollars", str(dollars), "--gpus", "H100", "--price", "2.5", "--laws", "20x")
    n = [d["laws"][0]["n_params"] for d in (by_flops, by_days, by_money)]
    assert n[0] == pytest.approx(n[1], rel=1e-6) and n[1] == pytest.approx(n[2], rel=1e-6)
    # 20 tokens per parameter: N = sqrt(C / 120) (Hoffmann et al. 2022).
    assert n[0] == pytest.approx((flops / 120) ** 0.5, rel=1e-6)


def test_plan_gopher_budget_20x(capsys):
    """Hoffmann et al. 2022: at Gopher's 5.76e23 FLOPs, 20 tokens/param gives N = 6.93e10, D = 1.386e12."""
    data = run_json(capsys, "plan", "--flops", "5.76e23", "--laws", "20x", "chinchilla")
    row = {r["law"]: r for r in data["laws"]}
    assert row["20x"]["n_params"] == pytest.approx(6.93e10, rel=1e-3)
    assert row["20x"]["n_tokens"] == pytest.approx(1.386e12, rel=1e-3)
    assert row["chinchilla"]["predicted_loss"] is not None
    assert data["cluster"]["assumed"] is True


def test_plan_compare(capsys):
    data = run_json(capsys, "plan", "--compare")
    names = [r["run"] for r in data]
    assert names == ["Chinchilla", "LLaMA-65B", "GPT-3", "OPT-175B", "BLOOM-176B", "BloombergGPT"]
    gpt3 = data[2]
    twenty = next(v for v in gpt3["verdicts"] if v["law"] == "20x")
    assert twenty["undertrained"] > 3  # 300B tokens for 175B params


def test_cost_and_advise(capsys):
    data = run_json(capsys, "cost", "llama-2-7b", "--tokens", "2T", "--gpus", "64xH100", "--price", "2")
    assert data["pretraining"]["flops"] == pytest.approx(6 * 6_738_415_616 * 2e12)
    assert data["pretraining"]["price_is_example"] is False
    lora, full = data["tuning"][1], data["tuning"][0]
    assert lora["dollars"] < full["dollars"]
    advice = run_json(capsys, "advise", "--task", "Summarisation", "--budget", "1e21")
    assert advice["family"] == "encoder-decoder" and advice["n_params"] > 0


def _row(out: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell`` (rich's box characters split cells)."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{out}")


def test_tables_print_the_json_numbers_with_units(capsys):
    """Each table shows the numbers its --json gives, formatted with their units."""
    from lmforge.plan.units import format_bytes, format_count, format_dollars

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "250")  # no wrapped cells
        plan = run_json(capsys, "plan", "--flops", "1e21")
        _, out, _ = run(capsys, "plan", "--flops", "1e21")
        assert "1e+21 FLOP" in out
        for law in plan["laws"]:
            row = _row(out, law["law"])
            assert row[1] == format_count(law["n_params"]) and row[2] == format_count(law["n_tokens"])
            assert float(row[3]) == pytest.approx(law["n_tokens"] / law["n_params"], abs=0.05)
            assert row[4].rstrip("*") == f"{law['predicted_loss']:.3f}"

        memory = run_json(capsys, "memory", "gpt2")
        _, out, _ = run(capsys, "memory", "gpt2")
        assert f"{memory['params']['total']:,} parameters" in out
        for entry in memory["storage"]:
            row = _row(out, entry["precision"] if entry["precision"] != "int4" else "int4 (group 128)")
            assert row[2] == f"{format_bytes(entry['bytes'])} ({format_bytes(entry['bytes'], 'GiB')})"

        cost = run_json(capsys, "cost", "gpt2")
        _, out, _ = run(capsys, "cost", "gpt2")
        pre = cost["pretraining"]
        row = _row(out, f"{format_count(pre['n_tokens'])} (20 per parameter; pass --tokens)")
        assert row[-1] == format_dollars(pre["dollars"])
        assert row[1] == f"{pre['flops']:.3g} FLOP"
        hosting = cost["hosting"]
        assert f"{format_dollars(hosting['dollars_per_month'])}" in out and format_bytes(hosting["weight_bytes"]) in out

        advice = run_json(capsys, "advise", "--task", "ner")
        _, out, _ = run(capsys, "advise", "--task", "ner")
        assert _row(out, "family")[1] == advice["family"] and _row(out, "objective")[1] == advice["objective"]
        assert f"lmforge preset {advice['preset']}" in out and advice["command"] in out

    code, out, _ = run(capsys, "memory", "gpt2", "--gpu-memory", "24GiB")
    assert "GB" in out and "GiB" in out and "fits" in out


# ---- bad input: one line, exit 2, no traceback ---------------------------------------------

BAD = [
    (["plan", "--flops", "0"], "must be greater than zero"),
    (["plan", "--flops", "-1e20"], "cannot read"),
    (["plan", "--flops", "nan"], "cannot read"),
    (["plan", "--flops", "1e60"], "absurdly large"),
    (["plan", "--flops", "1e23", "--dollars", "1e6"], "flops"),
    (["plan", "--gpus", "8xFOO", "--days", "3"], "unknown GPU ('FOO')"),
    (["plan", "--gpus", "64xH100"], "days"),
    (["plan", "--gpus", "64xH100", "--days", "14", "--mfu", "40"], "MFU"),
    (["plan"], "budget"),
    (["plan", "--flops", "1e21", "--laws", "chinchila"], "did you mean chinchilla"),
    (["memory", "lama-2-7b"], "did you mean llama-2-7b"),
    (["memory"], "no model given"),
    (["memory", "gpt2", "--params", "7B"], "not both"),
    (["memory", "gpt2", "--gpus", "8xH100", "--n-gpus", "4"], "given twice"),
    (["memory", "gpt2", "--gpu-memory", "lots"], "cannot read --gpu-memory"),
    (["memory", "gpt2", "--micro-batch", "0"], "micro_batch"),
    (["memory", "gpt2", "--seq-len", "100000"], "seq_len"),
    (["memory", "--params", "-5B"], "cannot read --params"),
    (["memory", "gpt2", "--precision", "int3"], "invalid choice: 'int3'"),
    (["memory", "gpt2", "--gpus", "H100", "--offload"], None),  # offload on one GPU: allowed under zero stages
    (["cost", "gpt2", "--gpus", "8xH1OO"], "unknown GPU"),
    (["cost", "gpt2", "--mfu", "0"], "MFU"),
    (["cost", "gpt2", "--price", "-2"], "price"),
    (["advise", "--task", "poetry"], "unknown task ('poetry')"),
    (["advise"], "required: --task"),
    (["advise", "--task", "chat", "--budget", "abc"], "cannot read --budget"),
]


@pytest.mark.parametrize("argv, needle", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys):
    if needle is None:
        assert run(capsys, *argv)[0] == 0
        return
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err


def test_bad_spec_file(tmp_path, capsys):
    """d_model not divisible by heads, from a user's spec file."""
    spec = tmp_path / "model.yaml"
    spec.write_text("d_model: 100\nn_heads: 12\n")
    code, _, err = run(capsys, "memory", str(spec))
    assert code == 2 and "d_model is not divisible by the number of heads" in err
    (tmp_path / "empty.yaml").write_text("")
    code, _, err = run(capsys, "memory", str(tmp_path / "empty.yaml"))
    assert code == 2 and "holds no fields" in err
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    code, _, err = run(capsys, "memory", str(tmp_path / "binary.json"))
    assert code == 2 and "UTF-8" in err
    code, _, err = run(capsys, "memory", str(tmp_path / "missing.yaml"))
    assert code == 2 and "not found" in err


def test_debug_shows_traceback():
    done = subprocess.run([sys.executable, "-m", "lmforge", "advise", "--task", "poetry", "--debug"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" in done.stderr and "UserError" in done.stderr
    plain = subprocess.run([sys.executable, "-m", "lmforge", "advise", "--task", "poetry"],
                           capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr


def test_console_script_and_module_agree():
    via_module = subprocess.run([sys.executable, "-m", "lmforge", "--version"], capture_output=True, text=True)
    assert via_module.returncode == 0 and via_module.stdout.startswith("lmforge ")


def test_plan_tiny_and_huge_budgets_still_answer(capsys):
    """A budget too small for a 32k-vocabulary shape still gets N and D, without a shape;
    at the largest accepted budget, Kaplan's N_opt is beyond any shape but the plan answers."""
    for flops in ("1e12", "1e29"):
        data = run_json(capsys, "plan", "--flops", flops)
        assert all(row["n_params"] > 0 for row in data["laws"])
        assert any(row["shape"] is None and row["shape_note"] for row in data["laws"])
    code, out, _ = run(capsys, "plan", "--flops", "1e12")
    assert code == 0 and "no shape: parameter count too small for this vocabulary" in out


def test_plan_emits_a_training_config(tmp_path, capsys):
    """plan --emit-config writes a RunConfig whose model has the law's N (within the shape
    tolerance) and whose max_tokens is the law's D."""
    from lmforge.plan.specs import param_counts
    from lmforge.train.config import load_config
    from lmforge.train.model_setup import model_spec

    path = tmp_path / "run.yaml"
    data = run_json(capsys, "plan", "--flops", "1e18", "--laws", "20x", "--emit-config", str(path))
    row = data["laws"][0]
    config = load_config(path)
    spec = model_spec(config.model, config.data.vocab_size, config.data.seq_len)
    assert param_counts(spec).total == pytest.approx(row["n_params"], rel=0.10)
    assert int(config.train.max_tokens) == int(row["n_tokens"])
    missing = str(tmp_path / "x" / "y.yaml")
    code, _, err = run(capsys, "plan", "--flops", "1e18", "--laws", "20x", "--emit-config", missing)
    assert code == 2 and "does not exist" in err


def test_plan_emits_the_config_of_a_fitted_law(tmp_path, capsys):
    """--emit-law fitted takes the row of --law's law.json (here lmforge's shipped pydocs fit)."""
    from lmforge.train.budget import DEFAULT_LAW
    from lmforge.train.config import load_config

    path = tmp_path / "run.yaml"
    data = run_json(capsys, "plan", "--flops", "1e21", "--laws", "20x", "--law", str(DEFAULT_LAW), "--emit-config",
                    str(path), "--emit-law", "fitted")
    fitted = next(row for row in data["laws"] if row["law"] == "fitted")
    assert int(load_config(path).train.max_tokens) == int(fitted["n_tokens"])
