"""The generation settings as one validated dataclass, storable in a YAML file.

Torch-free, so the CLI can read and check a config before loading a model. The knobs and
their order of application are those of ``lmforge.generate.processors`` (the same order
as Hugging Face transformers' ``generate()``); the defaults are transformers'-like
sampling defaults (temperature 0.8, top-k 50, everything else off).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lmforge.errors import UserError, check_fraction, check_positive, check_whole, unknown_name


@dataclass(frozen=True)
class GenerateConfig:
    """How to generate; every knob is checked when the config is built (one-line UserError).

    - ``max_new_tokens`` (64): new tokens per output at most (0 returns the prompt alone);
      the model's context also bounds it (see ``lmforge.generate.engine``).
    - ``temperature`` (0.8): logits / T before the softmax; < 1 sharpens, > 1 flattens,
      0 is greedy (the argmax, no draw).
    - ``top_k`` (50): keep only the k most probable tokens (Fan et al. 2018); 0 is off.
    - ``top_p`` (1.0): nucleus sampling, keep the smallest set of most probable tokens whose
      probability reaches p (Holtzman et al. 2020); in (0, 1], 1 is off.
    - ``min_p`` (0.0): keep tokens with p >= min_p * p_max (Nguyen et al. 2024); in [0, 1], 0 is off.
    - ``repetition_penalty`` (1.0): CTRL's penalty (Keskar et al. 2019) on every token
      already in the prompt or the output; > 1 discourages repeats, 1 is off.
    - ``stop`` ([]): strings that end an output; the text ends before the first one found.
    - ``seed`` (0): sampling seed; the same seed gives the same text.
    - ``num_samples`` (1): outputs per prompt, drawn with seeds seed, seed + 1, ...
    """

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    num_samples: int = 1

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
        import yaml

        path = Path(path)
        if not path.is_file():
            raise UserError("generation config not found", str(path), "pass the path of a YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise UserError("the generation config is not valid YAML", str(path), problem) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError("the generation config must be a mapping", str(path), "write e.g. 'temperature: 0.7'")
        return cls().replace(**{str(k): v for k, v in data.items()})
