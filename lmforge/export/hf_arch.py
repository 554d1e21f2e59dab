"""What every Hugging Face architecture map provides, and the checks they share.

One `HFArch` per transformers class lmforge exports to and imports from
(`lmforge.export.hf_gpt2`, `hf_llama`, `hf_bert`, `hf_t5`, `hf_bart`):

- ``check(spec)``: every ModelSpec field must be one the class expresses exactly; the
  first that is not raises a one-line UserError naming the field and its value (never an
  approximate export);
- ``config(spec, tokens)``: the ``config.json`` dict (dropout 0; lmforge's eps, rotary base);
- ``rules(spec)``: the weight-name table (`lmforge.export.weights`), read both ways;
- ``constants(spec)``: tensors the class stores that lmforge has no weight for (BART's
  zero ``final_logits_bias``), which an import checks are still what lmforge assumes;
- ``spec_fields(config)``: ModelSpec fields from a ``config.json`` (import), refusing any
  setting lmforge cannot compute exactly; ``ignored(name)``: checkpoint tensors an import
  may leave out (heads the class does not use, tied copies).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import UserError
from lmforge.plan.specs import ModelSpec


@dataclass(frozen=True)
class SpecialIds:
    """The token ids a config.json names (from lmforge's tokenizer)."""

    bos: int
    eos: int
    pad: int | None
    mask: int | None


class HFArch:
    model_type: str = ""
    hf_class: str = ""
    auto_class: str = ""  # AutoModelForCausalLM | AutoModelForMaskedLM | AutoModelForSeq2SeqLM
    base_preset: str = ""  # the lmforge preset an imported run's config.yaml starts from

    def check(self, spec: ModelSpec) -> None:
        raise NotImplementedError

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        raise NotImplementedError

    def rules(self, spec: ModelSpec) -> list:
        raise NotImplementedError

    def constants(self, spec: ModelSpec) -> dict[str, torch.Tensor]:
        return {}

    def check_constants(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """UserError when a checkpoint's `constants` hold what lmforge cannot compute."""

    def spec_fields(self, config: dict) -> dict:
        raise NotImplementedError

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        return False

    def generation_config(self, spec: ModelSpec, tokens: SpecialIds) -> dict | None:
        """generation_config.json for generative classes (None for masked LMs)."""
        out = {"bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "pad_token_id": tokens.pad}
        if spec.family == "encoder-decoder":
            out["decoder_start_token_id"] = tokens.bos
        return out


def require(spec: ModelSpec, arch: HFArch, field: str, allowed: tuple, why: str = "") -> None:
    """UserError unless ``getattr(spec, field)`` is one of ``allowed``."""
    value = getattr(spec, field)
    if value not in allowed:
        shown = " or ".join(repr(a) for a in allowed)
        because = f", {why}" if why else ""
        raise UserError(
            f"no exact transformers equivalent: {arch.hf_class} needs {field}={shown}{because}; "
            f"this run has {field}={value!r}",
            None,
            "train with a layout transformers expresses (README, Export and import), or keep the run in lmforge",
        )


def require_plain_heads(spec: ModelSpec, arch: HFArch) -> None:
    """Multi-head attention with head_dim = d_model / n_heads (GPT-2, BERT, BART)."""
    require(spec, arch, "n_kv_heads", (None, spec.n_heads), "grouped-query attention is Llama's")
    if spec.d_head * spec.n_heads != spec.d_model:
        raise UserError(f"no exact transformers equivalent: {arch.hf_class} needs head_dim = d_model / n_heads",
                        f"head_dim={spec.d_head}, d_model={spec.d_model}, n_heads={spec.n_heads}",
                        "leave head_dim unset")


def refuse_config(arch: HFArch, key: str, value: object, why: str) -> UserError:
    """The one-line error for a config.json setting lmforge cannot compute exactly."""
    return UserError(f"{arch.hf_class} with {key}={value!r} cannot be imported exactly", why,
                     "import a checkpoint without that setting")


def get(config: dict, key: str, arch: HFArch, *, default: object = ...) -> object:
    """config[key], or a UserError naming the missing key."""
    if key in config and config[key] is not None:
        return config[key]
    if default is not ...:
        return default
    raise UserError(f"config.json of a {arch.model_type} model lacks {key!r}", arch.hf_class,
                    "pass a complete transformers checkpoint directory")
