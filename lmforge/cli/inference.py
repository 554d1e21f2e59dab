"""Using trained models: generate (decoders and encoder-decoders) and fill-mask (encoders)."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.output import print_json, print_lines, print_table


def generate(
    run_dir: str,
    /,
    *,
    prompt: list[str],
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int = 50,
    seed: int = 0,
    json: bool = False,
) -> None:
    """Sample text from a trained run: a decoder continues each prompt; an encoder-decoder
    maps each prompt (its input) to an output.

    In an encoder-decoder's input, <mask> and <|sentinel_0|> ... stand for those tokens
    (BART and T5 fill them in). Temperature 0 is greedy; top-k keeps the k most probable
    tokens. The full generation
    settings (top-p, min-p, repetition penalty, stop strings, streaming, beam search)
    come with the generation engine.

    Args:
        run_dir: a run directory written by lmforge train
        prompt: one or more prompts (inputs, for an encoder-decoder)
        max_new_tokens: tokens to generate at most
        temperature: sampling temperature (0 = greedy)
        top_k: keep the k most probable tokens
        seed: sampling seed (same seed, same text)
        json: print JSON instead of text

    Examples:
        lmforge generate runs/quickstart --prompt "Return the"
        lmforge generate runs/t5 --prompt "summarize: ..." --temperature 0
    """
    from lmforge.errors import UserError
    from lmforge.generate.fill_mask import encode_with_marks
    from lmforge.generate.sample import sample, sample_seq2seq
    from lmforge.train.run_dir import load_run

    run = load_run(Path(run_dir))
    tok = run.tokenizer
    outputs = []
    for text in prompt:
        ids = encode_with_marks(tok, text) if run.spec.family == "encoder-decoder" else tok.encode(text)
        options = dict(temperature=temperature, top_k=top_k, seed=seed, eos_id=tok.eos_id)
        if run.spec.family == "decoder":
            new = sample(run.model, ids, max_new_tokens, **options)
        elif run.spec.family == "encoder-decoder":
            new = sample_seq2seq(run.model, ids, max_new_tokens, decoder_start_id=tok.bos_id, **options)
        else:
            raise UserError("an encoder does not generate text", run_dir, "use lmforge fill-mask with this run")
        outputs.append({"prompt": text, "ids": new, "text": tok.decode(new)})
    if json:
        print_json(outputs)
        return
    for out in outputs:
        joiner = "" if run.spec.family == "decoder" else "\n-> "
        print_lines(f"[bold]{out['prompt']}[/bold]{joiner}{out['text']}")


def fill_mask(run_dir: str, text: str, /, *, top_k: int = 5, json: bool = False) -> None:
    """The top-k candidates, with probabilities, for each <mask> in a text (encoders).

    Args:
        run_dir: a run directory of an encoder trained with objective mlm
        text: the text, with one or more literal <mask>
        top_k: candidates per mask
        json: print JSON instead of a table

    Examples:
        lmforge fill-mask runs/bert "The capital of France is <mask>."
    """
    from lmforge.generate.fill_mask import fill_mask as fill
    from lmforge.train.run_dir import load_run

    run = load_run(Path(run_dir))
    results = fill(run.model, run.tokenizer, text, top_k)
    if json:
        print_json([[{"token": c.token, "id": c.token_id, "probability": c.probability} for c in r] for r in results])
        return
    for index, candidates in enumerate(results):
        print_table(f"<mask> {index + 1} in {text!r}", ["rank", "token", "probability"],
                    [[str(rank + 1), repr(c.token), f"{c.probability:.3f}"] for rank, c in enumerate(candidates)])
