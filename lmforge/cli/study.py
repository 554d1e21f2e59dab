"""The study verbs: several runs planned together to answer one question."""

from __future__ import annotations

from typing import Literal

from lmforge.cli.output import print_json, print_lines, print_table


def domain(
    *,
    domain: str,
    general: str,
    out: str,
    budget: str = "5min",
    shares: str = "0,0.25,0.51,0.75,1",
    continue_fraction: float = 0.25,
    tokenizer: Literal["mix", "domain", "general"] = "mix",
    eval_domain: str | None = None,
    eval_general: str | None = None,
    weight: float = 0.5,
    vocab_size: int = 1024,
    seq_len: int = 128,
    style: Literal["gpt2", "llama"] = "gpt2",
    seed: int = 0,
    json: bool = False,
) -> None:
    """Domain only, general only, mixed, or continued pretraining, at equal compute: which is
    best for your domain text and your budget (BloombergGPT mixed 51% financial with 49%
    public text), measured in bits per byte on held-out text of both kinds.

    The planner sizes the first arm for --budget; every arm copies that run (shape, tokens,
    batch, learning rate, seed) and differs only in its data. Three tokenizers (general,
    domain, mix) are trained and measured in bytes per token on both held-out texts; the arms
    use --tokenizer. Writes study.json, study.csv and study.png into --out; killed, the same
    command continues (finished arms are read back).

    Args:
        domain: the domain text, NAME=PATH (e.g. finance=fomc.txt)
        general: the general text, NAME=PATH (e.g. general=gutenberg.txt)
        out: the study directory
        budget: per arm: a time (20min, 1h) or FLOPs (3e13); the continued arm splits it
        shares: the domain's shares of the tokens, in [0, 1], comma-separated (0 = general only, 1 = domain only)
        continue_fraction: the continued arm: general for 1 - f of the steps, then the domain for f
            (0 leaves the arm out)
        tokenizer: which of the three tokenizers the arms use
        eval_domain: another held-out domain text to evaluate every arm on
        eval_general: another held-out general text to evaluate every arm on
        weight: the domain's weight when naming the best arm (weight x domain + (1 - weight) x general bits per byte)
        vocab_size: of each tokenizer
        seq_len: tokens per training sequence
        style: gpt2 (learned positions, GELU) or llama (rotary, SwiGLU)
        seed: of every arm
        json: print JSON instead of tables

    Examples:
        lmforge study domain --domain finance=fomc.txt --general general=gutenberg.txt --budget 4min --out studies/fomc
        lmforge study domain --domain medical=medquad.txt --general general=books.txt --budget 3e13 --shares 0,0.5,1
    """
    from lmforge.study.domain import study

    result = study(domain, general, out, budget=budget, shares=shares,
                   continue_fraction=continue_fraction if continue_fraction else 0.0, tokenizer=tokenizer,
                   vocab_size=vocab_size, seq_len=seq_len, style=style, seed=seed, weight=weight,
                   eval_domain=eval_domain, eval_general=eval_general, log=print)
    if result.stopped is not None:
        raise SystemExit(result.exit_code)
    if json:
        import json as json_module

        print_json(json_module.loads((result.out / "study.json").read_text(encoding="utf-8")))
        return
    texts = list(result.texts)
    print_table("bytes per token of each tokenizer on held-out text (more is more compressive)",
                ["tokenizer", *texts],
                [[kind + (" (used)" if kind == result.tokenizer else ""), *[f"{row[t]:.3f}" for t in texts]]
                 for kind, row in result.fertility.items()])
    print_table(f"held-out bits per byte at equal compute ({result.arms[0].flops:.3g} FLOPs per arm)",
                ["arm", "domain share", "steps", *texts],
                [[a.name, "continued" if a.share is None else f"{a.share:g}", a.steps,
                  *[f"{a.bits_per_byte[t]:.4f}" for t in texts]] for a in result.arms])
    print_lines(f"best at weight {result.weight:g} on the domain: {result.best}",
                f"written: {result.out / 'study.json'}, study.csv, study.png")
