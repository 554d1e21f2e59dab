"""Using trained models: generate (decoders and encoder-decoders) and fill-mask (encoders)."""

from __future__ import annotations

from pathlib import Path

from lmforge.cli.output import print_json, print_lines, print_table
from lmforge.cli.signature import settings_from
from lmforge.generate.config import GenerateConfig


@settings_from(GenerateConfig)
def generate(
    run_dir: str,
    /,
    *,
    prompt: list[str] | None = None,
    prompt_file: str | None = None,
    whole_file: bool = False,
    config: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
    num_samples: int | None = None,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    slide_window: bool | None = None,
    stream: bool = False,
    json: bool = False,
) -> None:
    r"""Sample text from a trained run: a decoder continues each prompt; an encoder-decoder
    maps each prompt (its input) to an output.

    Settings come from the GenerateConfig defaults, then --config (a YAML file of the same
    names), then the flags given here. Several prompts run as one left-padded batch with a
    KV cache. In an encoder-decoder's input, <mask> and <|sentinel_0|> ... stand for those
    tokens (BART and T5 fill them in).

    Args:
        run_dir: a run directory written by lmforge train or lmforge quantize
        prompt: one or more prompts (inputs, for an encoder-decoder)
        prompt_file: a UTF-8 file of prompts, one per non-empty line (or the whole file as
            one prompt with --whole-file)
        whole_file: read --prompt-file as a single prompt
        config: a YAML file of generation settings (GenerateConfig)
        stop: strings that end an output (before the stop string); any number
        stream: print the text as it is generated (one prompt, one sample)
        json: print JSON (prompt, ids, text, logprobs, finish_reason, score per output)

    Examples:
        lmforge generate runs/quickstart --prompt "Return the" --stop "\n\n"
        lmforge generate runs/quickstart --prompt-file prompts.txt --top-p 0.9 --json
        lmforge generate runs/t5 --prompt "summarize: ..." --temperature 0
        lmforge generate runs/quickstart --prompt "def " --num-beams 4 --num-samples 2 --json
    """
    import sys

    from lmforge.errors import UserError

    settings = GenerateConfig.from_yaml(config) if config else GenerateConfig()
    settings = settings.replace(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, repetition_penalty=repetition_penalty, stop=stop, seed=seed,
                                num_samples=num_samples, num_beams=num_beams, length_penalty=length_penalty,
                                slide_window=slide_window)
    prompts = list(prompt or []) + _read_prompts(prompt_file, whole_file)
    if not prompts:
        raise UserError("no prompt given", None, "pass --prompt TEXT or --prompt-file PATH")
    if stream and len(prompts) * settings.num_samples != 1:
        raise UserError("--stream shows one output as it is made", f"{len(prompts)} prompts x "
                        f"{settings.num_samples} samples", "drop --stream, or pass one prompt and one sample")

    from lmforge.generate.engine import generate as run_generation
    from lmforge.runs import load_run

    run = load_run(Path(run_dir))
    joiner = "" if run.spec.family == "decoder" else "\n-> "  # a continuation, or an input's output
    streaming = stream and not json
    if streaming:
        sys.stdout.write(prompts[0] + joiner)

        def on_token(row: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

    results = run_generation(run.model, run.tokenizer, prompts, settings, on_token if streaming else None)
    cut = sum(r.finish_reason == "context" for r in results)
    if cut and not json:  # the JSON says it per output
        sys.stderr.write(f"note: {cut} of {len(results)} outputs filled the model's context ({run.spec.context} "
                         f"tokens, prompt included) before --max-new-tokens {settings.max_new_tokens}\n")
    if json:
        print_json([r.to_dict() for r in results])
        return
    if streaming:
        sys.stdout.write("\n")
        return
    from rich.markup import escape

    what = "beam" if settings.beams else "sample"
    for index, out in enumerate(results):
        if len(results) > 1:  # a header per output keeps several multi-line outputs apart
            print_lines(f"[dim]--- prompt {index // settings.num_samples + 1}, {what} {out.sample + 1} "
                        f"({out.finish_reason})[/dim]")
        print_lines(f"[bold]{escape(out.prompt)}[/bold]{joiner}{escape(out.text)}")


def _read_prompts(path: str | None, whole: bool) -> list[str]:
    """Prompts from a file: one per non-empty line, or the whole text as one."""
    from lmforge.errors import UserError

    if path is None:
        if whole:
            raise UserError("--whole-file needs --prompt-file", None, "pass --prompt-file PATH")
        return []
    file = Path(path)
    if not file.is_file():
        raise UserError("prompt file not found", path, "pass the path of a UTF-8 text file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("the prompt file is not UTF-8 text", path, "save it as UTF-8") from None
    if whole:
        return [text]
    return [line for line in text.splitlines() if line.strip()]


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
    from lmforge.runs import load_run

    run = load_run(Path(run_dir))
    results = fill(run.model, run.tokenizer, text, top_k)
    if json:
        print_json([[{"token": c.token, "id": c.token_id, "probability": c.probability} for c in r] for r in results])
        return
    for index, candidates in enumerate(results):
        print_table(f"<mask> {index + 1} in {text!r}", ["rank", "token", "probability"],
                    [[str(rank + 1), repr(c.token), f"{c.probability:.3f}"] for rank, c in enumerate(candidates)])
