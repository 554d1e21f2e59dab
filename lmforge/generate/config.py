"""The generation settings as one validated dataclass, storable in a YAML file.

Torch-free, so the CLI can read and check a config before loading a model. The knobs and
their order of application are those of ``lmforge.generate.processors`` (the same order
as Hugging Face transformers' ``generate()``); the defaults are transformers'-like
sampling defaults: a mild temperature and top-k, everything else off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lmforge import configs
from lmforge.errors import UserError, check_fraction, check_positive, check_whole, unknown_name

_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")  # what beam search does not use


@dataclass(frozen=True)
class GenerateConfig:
    """How to generate; every knob is checked when the config is built (one-line UserError).

    Read from YAML and shown in ``lmforge generate --help`` by `lmforge.configs`: the
    comment beside each field is its help, the default is the default.
    """

    # new tokens per output at most (0: the prompt alone); the model's context bounds it too
    max_new_tokens: int = 64
    temperature: float = 0.8  # logits / T before the softmax: < 1 sharpens, > 1 flattens, 0 is greedy (the argmax)
    top_k: int = 50  # keep the k most probable tokens (Fan et al. 2018); 0 is off
    # nucleus sampling: keep the smallest set of most probable tokens reaching p (Holtzman et al. 2020); 1 is off
    top_p: float = 1.0
    min_p: float = 0.0  # keep tokens with p >= min_p x p_max (Nguyen et al. 2024), in [0, 1]; 0 is off
    # CTRL's penalty (Keskar et al. 2019) on tokens already in the prompt or output; > 1 discourages repeats, 1 is off
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # strings that end an output (the text ends before the first)
    seed: int = 0  # sampling seed: the same seed gives the same text
    num_samples: int = 1  # outputs per prompt, drawn with seeds seed, seed + 1, ... (with beams: the best num_samples)
    # beam search with this many beams (Sutskever et al. 2014): deterministic, the knobs above do not apply; 1 is off
    num_beams: int = 1
    length_penalty: float = 1.0  # beams rank by log-probability / length ** length_penalty (transformers' rule)
    # decoders: past the context keep going over the last context tokens (recomputed each token) instead of stopping
    slide_window: bool = False

    def __post_init__(self) -> None:
        check_whole("max_new_tokens", self.max_new_tokens, allow_zero=True)
        check_positive("temperature", self.temperature, allow_zero=True, upper=1e6)
        check_whole("top_k", self.top_k, allow_zero=True)
        check_fraction("top_p", self.top_p)
        check_positive("min_p", self.min_p, allow_zero=True)
        if self.min_p > 1:
            raise UserError("min_p must be in [0, 1]", self.min_p, "pass e.g. 0.05 (a fraction of p_max); 0 is off")
        check_positive("repetition_penalty", self.repetition_penalty, upper=1e6)
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise UserError("stop must be a list of non-empty strings", self.stop, 'pass e.g. stop: ["\\n\\n"]')
        object.__setattr__(self, "stop", list(self.stop))
        check_whole("seed", self.seed, upper=2**63 - 1, allow_zero=True)
        check_whole("num_samples", self.num_samples, upper=10_000)
        check_whole("num_beams", self.num_beams, upper=1024)
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)) \
                or not math.isfinite(self.length_penalty):
            raise UserError("length_penalty must be a finite number", self.length_penalty,
                            "pass e.g. 1.0 (0 ranks beams by their summed log-probability)")
        if not isinstance(self.slide_window, bool):
            raise UserError("slide_window must be true or false", self.slide_window, "pass slide_window: true")
        if self.num_beams == 1:
            if self.length_penalty != 1:
                raise UserError("length_penalty ranks beams", f"length_penalty {self.length_penalty} with num_beams 1",
                                "pass num_beams 4, or drop length_penalty")
            return
        defaults = GenerateConfig.__dataclass_fields__
        moved = [n for n in _SAMPLING if getattr(self, n) != defaults[n].default]
        if moved:
            raise UserError("beam search is deterministic: the sampling settings do not apply",
                            f"{moved[0]} {getattr(self, moved[0])} with num_beams {self.num_beams}",
                            f"drop {moved[0]}, or pass num_beams 1 to sample")
        if self.num_samples > self.num_beams:
            raise UserError("beam search returns at most num_beams outputs per prompt",
                            f"num_samples {self.num_samples} with num_beams {self.num_beams}",
                            f"pass num_samples <= {self.num_beams}, or more beams")
        if self.slide_window:
            raise UserError("beam search does not slide the window", "slide_window with num_beams "
                            f"{self.num_beams}", "drop slide_window, or pass num_beams 1")

    @property
    def beams(self) -> bool:
        """True when num_beams > 1: beam search instead of drawing."""
        return self.num_beams > 1

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: every sample is the argmax path."""
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes: object) -> GenerateConfig:
        """A copy with ``changes`` (None values ignored), validated again; unknown names -> UserError."""
        known = {f.name for f in fields(self)}
        for name in changes:
            if name not in known:
                raise unknown_name("generation setting", name, known)
        merged = {**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}}
        return GenerateConfig(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GenerateConfig:
        """Read a YAML mapping of the knobs above (missing ones keep their defaults)."""
        return configs.load(cls, path, what="generation setting", file_what="generation config",
                            example="temperature: 0.7")
