"""The pretraining verbs: tokenizer train, prepare, train, eval, quickstart.

Each imports torch (where it needs it) inside the function, so ``lmforge plan`` and the
other planning verbs stay fast.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from lmforge.cli import pretraining_tables as tables
from lmforge.cli.output import print_json
from lmforge.cli.signature import passthrough
from lmforge.errors import UserError, check_whole
from lmforge.train.config import RunConfig


def tokenizer_train(
    *,
    data: list[str],
    vocab_size: int = 8192,
    out: str = "tokenizer.json",
    sample_bytes: int = 50_000_000,
    json: bool = False,
) -> None:
    """Train a byte-level BPE tokenizer (Hugging Face tokenizers) on a corpus.

    Special tokens: <|endoftext|> (eos), <|bos|>, <|pad|>, <|mask|> and 100 sentinels.
    Reports the bytes per token on the training text.

    Args:
        data: sources: PATH (.txt, .jsonl, .parquet, folder, glob), builtin:pydocs, builtin:markov, hf:NAME
        vocab_size: vocabulary size, special tokens included
        out: where to write tokenizer.json
        sample_bytes: train on at most this much text
        json: print JSON instead of a table

    Examples:
        lmforge tokenizer train --data corpus/ --vocab-size 8192 --out tokenizer.json
    """
    from lmforge.data.sources import parse_source
    from lmforge.data.tokenizer import bytes_per_token, train_tokenizer
    from lmforge.train.data_setup import sample_texts

    sources = [parse_source(arg) for arg in data]
    check_whole("--sample-bytes", sample_bytes, 10**13)
    tokenizer = train_tokenizer(sample_texts(sources, sample_bytes), vocab_size)
    tokenizer.save(Path(out))
    ratio = bytes_per_token(tokenizer, sample_texts(sources, min(sample_bytes, 5_000_000)))
    result = {"path": out, "vocab_size": tokenizer.vocab_size, "bytes_per_token": ratio, "sha256": tokenizer.sha256,
              "eos_id": tokenizer.eos_id, "special_tokens": 4 + len(tokenizer.sentinel_ids)}
    print_json(result) if json else tables.tokenizer(result)


def prepare(
    *,
    data: list[str],
    tokenizer: str,
    out: str = "data",
    val_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
    json: bool = False,
) -> None:
    """Tokenize a corpus into token shards (numpy memmaps) with a manifest.

    Documents end with eos; the train/validation split is by document, deterministic.
    Re-running on unchanged input does nothing; a manifest whose inputs or tokenizer
    changed is refused unless --force.

    Args:
        data: sources: PATH, name=PATH or name=PATH:weight; builtin:pydocs, builtin:markov, hf:NAME
        tokenizer: a tokenizer.json
        out: the shard directory
        val_fraction: share of documents held out for validation
        seed: seed of the split
        force: rebuild shards whose inputs or tokenizer changed
        json: print JSON instead of a table

    Examples:
        lmforge prepare --data finance=fomc.txt general=books.txt --tokenizer tokenizer.json --out data/
    """
    from lmforge.data.shards import prepare as prepare_shards
    from lmforge.data.sources import parse_source
    from lmforge.data.tokenizer import Tokenizer

    if not str(out).strip():
        raise UserError("--out is empty", out, "pass the shard directory, e.g. --out data")
    manifest = prepare_shards([parse_source(arg) for arg in data], Tokenizer.load(tokenizer), Path(out),
                              val_fraction=val_fraction, seed=seed, force=force)
    print_json(manifest.to_dict()) if json else tables.manifest(manifest, out)


@passthrough("overrides", config=RunConfig)
def train(
    *,
    config: str | None = None,
    data: list[str] | None = None,
    name: str | None = None,
    tokens: str | None = None,
    budget: str | None = None,
    law: str | None = None,
    resume: str | None = None,
    init_from: str | None = None,
    quiet: bool = False,
    json: bool = False,
    force: bool = False,
    print_config: bool = False,
    overrides: list[str] | None = None,
) -> None:
    """Pretrain (or continue pretraining) a language model of any family, in one process
    or on many under torchrun (--parallel.strategy ddp|zero1|zero2|zero3).

    The run is described by a YAML config and dotted overrides of any key
    (--train.lr 3e-4, --model.preset tiny-llama, --data.seq_len 512 ...). Writes
    RUN_DIR (out_dir/name): config.yaml, tokenizer.json, plan.json, metrics.jsonl,
    checkpoints/, latest, model.safetensors, plots/loss.png and report.json.

    Args:
        config: a YAML run config (see README); every key can also be given as --section.key VALUE
        data: sources as name=PATH:weight, repeatable (same as --data.sources)
        name: the run's name (RUN_DIR = out_dir/name)
        tokens: tokens to train on: a count like 20M, or auto (20 per parameter)
        budget: a time (5min, 90s) or FLOPs (3e13): the planner picks the compute-optimal model and tokens for it
            on this machine (same as --train.budget); the model preset gives only the style (gpt2 or llama)
        law: the scaling law that plans --budget and predicts the loss: a law.json from lmforge scaling fit, or a
            published law's name (default: lmforge's, fitted on builtin:pydocs)
        resume: a run directory to continue exactly where its latest checkpoint left off
        init_from: a run directory whose weights start this new run (continued pretraining)
        quiet: no progress bar: one line per log step
        json: print the result (steps, tokens, speed, validation) as JSON at the end
        force: train even when the preflight predicts that the run will not fit in device memory
        print_config: print the config the flags and files resolve to (YAML; JSON with --json) and stop
        overrides: --section.key VALUE pairs

    Examples:
        lmforge train --data general=books.txt --train.max_tokens 20M --name books
        lmforge train --config run.yaml --train.lr 3e-4 --tokens auto
        lmforge train --config run.yaml --model.preset tiny-llama --print-config > resolved.yaml
        lmforge train --data books.txt --budget 5min --law sweeps/books/law.json
        lmforge train --resume runs/books
        lmforge train --init-from runs/books --qat int4 --qat.group-size 32 --train.max-steps 200
    """
    from lmforge.train.config import load_config, parse_overrides
    from lmforge.train.validate import flag_names, validate_config

    values = parse_overrides(overrides or [])
    names = flag_names(values, {})
    if resume is not None and init_from is not None:
        raise UserError("--resume and --init-from do not go together", f"{resume} and {init_from}",
                        "--resume continues a run; --init-from starts a new one from a run's weights")
    if resume is not None:
        config = str(Path(resume) / "config.yaml")
        values.setdefault("name", Path(resume).name)
        values.setdefault("out_dir", str(Path(resume).parent))
        names.update(name="--resume", out_dir="--resume")
    if data:
        values["data.sources"] = data
        names["data.sources"] = "--data"
    for key, flag, value in (("name", "--name", name), ("train.max_tokens", "--tokens", tokens),
                             ("train.budget", "--budget", budget), ("train.law", "--law", law)):
        if value is not None:
            values[key] = value
            names[key] = flag
    if init_from is not None and config is None:  # start from what the source run was
        from lmforge.train.continuation import continuation

        config, values = continuation(Path(init_from), values)
    if resume is not None and not Path(config).is_file():
        raise UserError("the run directory to resume has no config.yaml", resume,
                        "pass a directory written by lmforge train")
    run_config = validate_config(load_config(config, values), names)
    if print_config:
        from lmforge.configs import to_yaml

        print_json(run_config.to_dict()) if json else sys.stdout.write(to_yaml(run_config))
        return
    from lmforge.train.loop import train as run_training

    hook = None
    if run_config.qat.precision != "none":  # quantization-aware training (--qat int4)
        from lmforge.quantize.qat import qat_hook

        hook = qat_hook(run_config.qat)
    # With --json, stdout carries only the JSON: progress and messages go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if json else contextlib.nullcontext():
        result = run_training(run_config, resume=resume is not None,
                              init_from=Path(init_from) if init_from else None, quiet=quiet or json, log=tables.log,
                              model_hook=hook, force=force)
    if not result.main:  # another rank of a torchrun job: rank 0 reports
        raise SystemExit(result.exit_code)
    if json:
        print_json(result.to_dict())
    else:
        tables.train_result(result)
    if result.exit_code:  # stopped by a signal: 128 + its number, after the checkpoint
        raise SystemExit(result.exit_code)


def evaluate(
    run_dir: str,
    /,
    *,
    data: list[str] | None = None,
    max_tokens: int | None = None,
    json: bool = False,
) -> None:
    """Loss, perplexity and bits per byte of a trained run on held-out text, per source.

    Without --data: the run's own validation split of each source.

    Args:
        run_dir: a run directory (with model.safetensors or a checkpoint)
        data: sources to evaluate on instead: PATH or name=PATH (tokenized with the run's tokenizer)
        max_tokens: evaluate at most this many tokens per source
        json: print JSON instead of a table

    Examples:
        lmforge eval runs/books
        lmforge eval runs/books --data held_out=test.txt
    """
    from lmforge.evaluate.run_eval import evaluate_run

    if max_tokens is not None:
        check_whole("--max-tokens", max_tokens, 10**12)

    results = evaluate_run(Path(run_dir), data, max_tokens=max_tokens)
    print_json({k: v.to_dict() for k, v in results.items()}) if json else tables.evaluation(results, run_dir)


def quickstart(
    *,
    out_dir: str = "runs",
    name: str = "quickstart",
    minutes: float = 2.0,
    quiet: bool = False,
) -> None:
    """The whole loop on the built-in corpus on this machine: tokenizer, shards, a small
    model trained for about --minutes, evaluation, and a sample of generated text.

    Needs no network: the corpus is the documentation strings of this Python's standard
    library. Prints where everything went.

    Args:
        out_dir: where the run directory goes
        name: the run's name
        minutes: training time budget
        quiet: no progress bar

    Examples:
        lmforge quickstart
    """
    from lmforge.quickstart import run_quickstart

    run_quickstart(Path(out_dir), name, minutes=minutes, quiet=quiet, log=tables.log)
