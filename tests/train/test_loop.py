"""The training loop end to end: it learns, it resumes exactly, it continues from weights."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from lmforge.data.builtin import MarkovSource
from lmforge.errors import UserError
from lmforge.train.config import load_config
from lmforge.train.loop import train
from lmforge.train.metrics import read_metrics

MARKOV = "markov=builtin:markov"  # order 2 over 8 letters, seed 0 (lmforge.data.builtin)


def config(tmp_path, name: str, **values):
    base = {
        "name": name, "out_dir": str(tmp_path), "data.sources": [MARKOV], "data.vocab_size": 360,
        "data.seq_len": 32, "train.batch_tokens": 512, "train.micro_batch": 8, "train.max_steps": 8,
        "train.warmup_steps": 2, "train.eval_every": 100, "train.eval_tokens": 4096, "train.ckpt_every": 100,
        "train.log_every": 1,
    }
    base.update(values)
    return load_config(None, base)


def quiet_log(_: str) -> None:
    pass


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_learns_the_entropy_rate_of_a_markov_source(tmp_path):
    """A small decoder gets within 0.05 nats/token of the source's entropy rate in < 1 min of CPU.

    With a 360-token byte-level vocabulary (no merges) every letter is one token, so the
    loss per token is comparable with the chain's entropy rate per symbol
    (H = -sum_s pi(s) sum_a P(a|s) ln P(a|s) = 1.556 nats; lmforge.data.builtin). Document
    boundaries (one eos per 1,000 letters) add a few thousandths.
    """
    entropy = MarkovSource().entropy_rate_nats()
    result = train(config(tmp_path, "markov", **{
        "model.preset": "tiny-llama", "data.seq_len": 64, "train.batch_tokens": 2048, "train.micro_batch": 32,
        "train.max_steps": 400, "train.lr": 5e-3, "train.warmup_steps": 20, "train.eval_tokens": 50000,
        "train.log_every": 50,
    }), quiet=True, log=quiet_log)
    val = result.validation["markov"].loss
    assert val < entropy + 0.05, (val, entropy)
    assert val > entropy - 0.03, (val, entropy)  # nothing can beat the source (up to eval noise)


def test_resume_is_bit_identical(tmp_path):
    """Stop at step 4 and resume: the weights after step 8 equal an uninterrupted run's, bit for bit
    (gradient accumulation over 2 micro-batches, AdamW state, schedule and data position all restored)."""
    whole = train(config(tmp_path, "whole"), quiet=True, log=quiet_log)
    paused = train(config(tmp_path, "paused", **{"train.stop_at_step": 4}), quiet=True, log=quiet_log)
    assert paused.steps == 4 and paused.stopped_by == "stop_at_step"
    resumed_config = config(tmp_path, "paused", **{"train.stop_at_step": None})
    resumed = train(resumed_config, resume=True, quiet=True, log=quiet_log)
    assert resumed.steps == whole.steps == 8
    a = load_file(str(whole.run_dir / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    losses = {r["step"]: r["loss"] for r in read_metrics(resumed.run_dir / "metrics.jsonl")}
    assert sorted(losses) == list(range(1, 9))  # no duplicated or missing lines after the resume
    assert losses[8] == {r["step"]: r["loss"] for r in read_metrics(whole.run_dir / "metrics.jsonl")}[8]


def test_run_directory_contents_and_report(tmp_path):
    result = train(config(tmp_path, "files"), quiet=True, log=quiet_log)
    run = result.run_dir
    for name in ("config.yaml", "tokenizer.json", "plan.json", "metrics.jsonl", "model.safetensors", "latest",
                 "report.json", "plots/loss.png", "data/manifest.json"):
        assert (run / name).exists(), name
    report = json.loads((run / "report.json").read_text())
    assert report["predicted"]["tokens"] == report["measured"]["tokens"] == 8 * 512
    assert report["predicted"]["params"] > 0 and report["measured"]["tokens_per_second"] > 0
    assert report["measured"]["validation"]["markov"]["bits_per_byte"] > 0


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_init_from_continues_from_trained_weights(tmp_path):
    first = train(config(tmp_path, "first", **{"train.max_steps": 30, "train.lr": 3e-3}), quiet=True, log=quiet_log)
    fresh = train(config(tmp_path, "fresh", **{"train.max_steps": 1}), quiet=True, log=quiet_log)
    continued = train(config(tmp_path, "continued", **{"train.max_steps": 1}), init_from=first.run_dir, quiet=True,
                      log=quiet_log)
    first_step = {name: read_metrics(r.run_dir / "metrics.jsonl")[0]["loss"] for name, r in
                  (("fresh", fresh), ("continued", continued))}
    assert first_step["continued"] < first_step["fresh"] - 0.2


def test_existing_run_directory_is_refused_and_failed_runs_leave_nothing(tmp_path):
    train(config(tmp_path, "taken", **{"train.max_steps": 1}), quiet=True, log=quiet_log)
    with pytest.raises(UserError, match="already exists"):
        train(config(tmp_path, "taken"), quiet=True, log=quiet_log)
    with pytest.raises(UserError, match="longer than the model's context"):
        train(config(tmp_path, "too-long", **{"data.seq_len": 512, "train.batch_tokens": 4096}), quiet=True,
              log=quiet_log)
    assert not (tmp_path / "too-long").exists()


def test_tokens_auto_is_twenty_per_parameter(tmp_path):
    """--tokens auto: D = 20 N (Hoffmann et al. 2022), rounded up to whole steps."""
    from lmforge.plan.presets import get_preset
    from lmforge.plan.specs import param_counts
    from lmforge.train.preflight import target_tokens

    cfg = config(tmp_path, "auto", **{"train.max_tokens": "auto"})
    n = param_counts(get_preset("tiny-gpt2").spec).total
    tokens, rule = target_tokens(cfg, n)
    assert tokens == pytest.approx(20 * n, rel=1e-6) and "20 tokens per parameter" in rule


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_mixture_and_activation_checkpointing_in_the_loop(tmp_path):
    """Two weighted sources: the tokens each contributed follow the weights; checkpointed
    activations give the same losses as stored ones."""
    sources = ["a=builtin:markov?seed=1:0.75", "b=builtin:markov?seed=2:0.25"]
    plain = train(config(tmp_path, "plain", **{"data.sources": sources}), quiet=True, log=quiet_log)
    share = plain.tokens_by_source["a"] / sum(plain.tokens_by_source.values())
    assert share == pytest.approx(0.75, abs=0.02)
    ckpt = train(config(tmp_path, "ckpt", **{"data.sources": sources, "train.activation_checkpointing": True}),
                 quiet=True, log=quiet_log)
    a = [r["loss"] for r in read_metrics(plain.run_dir / "metrics.jsonl")]
    b = [r["loss"] for r in read_metrics(ckpt.run_dir / "metrics.jsonl")]
    assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
@pytest.mark.parametrize("preset", ["tiny-bert", "tiny-t5"])
def test_resume_is_bit_identical_for_corrupting_objectives(tmp_path, preset):
    """Masking and span corruption draw from (seed, step, micro-batch): a resumed encoder or
    encoder-decoder run ends bit-identical to an uninterrupted one."""
    whole = train(config(tmp_path, "whole", **{"model.preset": preset}), quiet=True, log=quiet_log)
    train(config(tmp_path, "paused", **{"model.preset": preset, "train.stop_at_step": 4}), quiet=True, log=quiet_log)
    resumed = train(config(tmp_path, "paused", **{"model.preset": preset, "train.stop_at_step": None}), resume=True,
                    quiet=True, log=quiet_log)
    a = load_file(str(whole.run_dir / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(a[key].equal(b[key]) for key in a)
