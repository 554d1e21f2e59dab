"""Run configs: YAML + dotted overrides, typed, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.train.config import RunConfig, load_config, parse_overrides, save_config
from lmforge.train.schedule import learning_rate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "domain-mix.yaml"


def test_example_config_loads_and_overrides_win():
    config = load_config(EXAMPLE, parse_overrides(["--train.lr", "3e-4", "--model.d_model=384", "--train.compile"]))
    assert config.model.preset == "tiny-llama" and config.model.n_kv_heads == 4
    assert config.train.lr == 3e-4 and config.model.d_model == 384 and config.train.compile is True
    assert config.train.max_tokens == "auto" and config.data.sources == ["general=builtin:pydocs:1.0"]


def test_counts_take_suffixes_and_null():
    config = load_config(None, {"train.batch_tokens": "64K", "train.max_steps": "null", "train.max_time": "90"})
    assert config.train.batch_tokens == 64_000 and config.train.max_steps is None and config.train.max_time == 90.0


def test_round_trip(tmp_path):
    config = load_config(EXAMPLE)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize("overrides, needle", [
    ({"train.lrr": "1"}, "unknown config key ('train.lrr'); did you mean train.lr"),
    ({"model.prest": "x"}, "did you mean model.preset"),
    ({"train.lr": "fast"}, "train.lr must be a number"),
    ({"train.precision": "fp8"}, "must be one of auto, fp32, bf16, fp16"),
    ({"model.n_heads": "2.5"}, "model.n_heads must be an integer"),
    ({"train.compile": "maybe"}, "train.compile must be true or false"),
])
def test_bad_overrides(overrides, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("train:\n  warmup: 10\n")
    with pytest.raises(UserError, match="did you mean train.warmup_steps"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="cannot read the config file"):
        load_config(tmp_path / "bad.yaml")


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b", "1", "--c.d=2", "--flag"]) == {"a.b": "1", "c.d": "2", "flag": True}
    with pytest.raises(UserError, match="unexpected argument"):
        parse_overrides(["stray"])


def test_defaults_are_a_runnable_config():
    config = RunConfig()
    assert config.train.batch_tokens % config.data.seq_len == 0
    assert (config.train.batch_tokens // config.data.seq_len) % config.train.micro_batch == 0


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules(schedule):
    """Linear warmup to lr; cosine (Loshchilov & Hutter 2017) and WSD (Hu et al. 2024) end at min_lr_ratio x lr."""
    lrs = [learning_rate(s, lr=1.0, total_steps=100, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
           for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    if schedule == "constant":
        assert lrs[-1] == 1.0
    else:
        assert lrs[-1] == pytest.approx(0.1)
        assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:], strict=False))
    if schedule == "cosine":
        assert lrs[10 + 45] == pytest.approx(0.55, abs=0.02)  # halfway down the cosine
    if schedule == "wsd":
        assert lrs[79] == 1.0 and lrs[85] < 1.0  # stable, then decay over the last 20%
