"""The Python API: ``lmforge.api.generate(run_dir_or_model, prompts, **settings)``.

It lives here, not at ``lmforge.generate``, because that name is the subpackage
``lmforge/generate/`` (importing any of its modules would rebind the attribute). Importing
this module is cheap: torch is imported only when a function is called.
"""

from __future__ import annotations

from pathlib import Path


def generate(run_dir_or_model, prompts, *, tokenizer=None, config=None, on_token=None, **settings) -> list:
    """Generate from a run directory (``str``/``Path``) or a built model (then pass its
    ``tokenizer``). ``prompts``: a string or a list of strings. ``settings``: any
    ``GenerateConfig`` knob (max_new_tokens, temperature, top_k, top_p, min_p,
    repetition_penalty, stop, seed, num_samples, num_beams, length_penalty, slide_window),
    over ``config`` (a GenerateConfig or a YAML path). Returns ``list[GenerationResult]``
    (see ``lmforge.generate.engine``).

    Example: ``lmforge.api.generate("runs/quickstart", "Return the", temperature=0)``
    """
    from lmforge.errors import UserError
    from lmforge.generate.config import GenerateConfig
    from lmforge.generate.engine import generate as run_generation

    if config is None:
        config = GenerateConfig()
    elif isinstance(config, (str, Path)):
        config = GenerateConfig.from_yaml(config)
    config = config.replace(**settings)
    if isinstance(run_dir_or_model, (str, Path)):
        from lmforge.runs import load_run

        run = load_run(run_dir_or_model)  # a quantized run directory too
        model, tokenizer = run.model, tokenizer or run.tokenizer
    else:
        model = run_dir_or_model
        if tokenizer is None:
            raise UserError("a model needs its tokenizer", type(model).__name__, "pass tokenizer=..., or a run dir")
    if isinstance(prompts, str):
        prompts = [prompts]
    return run_generation(model, tokenizer, list(prompts), config, on_token)
