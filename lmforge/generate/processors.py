"""Sampling as a chain of small logits processors, applied in one documented order.

Every processor maps ``(logits (B, V), generated_ids (B, T) | None) -> logits (B, V)``
and marks a filtered token by setting its logit to ``-inf``; each validates its argument
when it is built and raises a one-line ``UserError`` for a bad one. The order is fixed
(``ORDER``), the same as Hugging Face transformers' ``generate()`` (logits processors,
then warpers):

1. ``RepetitionPenalty`` (Keskar et al. 2019, CTRL, Sec. 4.1): the logit of every token
   already in ``generated_ids`` is divided by the penalty when positive and multiplied by
   it when negative, so a penalty > 1 always makes a repeat less likely.
2. ``Temperature`` (Ackley et al. 1985; Hinton et al. 2015, Sec. 2): logits / T.
   T = 0 is greedy: only the argmax survives (the first one when several tie, as
   ``torch.argmax`` does), and the engine's ``draw`` takes the argmax without drawing.
3. ``TopK`` (Fan et al. 2018, Sec. 5.4): keep the k largest logits.
4. ``TopP`` (Holtzman et al. 2020, Sec. 3.1, nucleus sampling): keep the smallest set of
   most probable tokens whose cumulative probability reaches p; at least one token.
5. ``MinP`` (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"): keep the tokens
   with p >= min_p * p_max.

Tie rule, the same for top-k and top-p: a token tied with the last one kept is kept too,
so a filter is a threshold on the logits and never depends on token order (top-k keeps
exactly k tokens unless the k-th largest logit is tied; transformers'
``TopKLogitsWarper`` makes the same choice). Top-p sums probabilities in float64 (the
normaliser in the logits' precision, at least float32), so the cumulative sum over a 50k
vocabulary does not drift; it sorts only the 256 most probable tokens first and widens
the search only when a row's nucleus is larger. Min-p compares logits with
max + log(min_p), which is p >= min_p * p_max without a softmax.
Min-p after top-k / top-p sees renormalised probabilities, but p / p_max is unchanged by
renormalisation, so its result equals min-p on the unfiltered softmax restricted to the
tokens still kept. The penalty commutes with temperature (T > 0 keeps the sign), which is
why it comes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from lmforge.errors import UserError, check_fraction, check_positive, check_whole

NEG_INF = float("-inf")
_FIRST_K, _GROWTH = 256, 16  # top-p looks at the 256 most probable tokens first, then 16x more, then all


def _check_logits(logits: torch.Tensor, generated_ids: torch.Tensor | None) -> None:
    """Shapes: logits (B, V) floating point; generated_ids (B, T) integer ids or None."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError("logits must be a floating-point tensor of shape (batch, vocab)", shape,
                        "pass the last position's logits, e.g. model(ids)[:, -1, :]")
    if generated_ids is None:
        return
    if (
        not isinstance(generated_ids, torch.Tensor)
        or generated_ids.dim() != 2
        or generated_ids.is_floating_point()
        or generated_ids.shape[0] != logits.shape[0]
    ):
        shape = tuple(generated_ids.shape) if isinstance(generated_ids, torch.Tensor) else generated_ids
        raise UserError("generated_ids must be an integer tensor of shape (batch, steps) matching the logits' batch",
                        shape, f"pass a LongTensor with {logits.shape[0]} rows, or None")


@dataclass(frozen=True)
class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al. 2019, Sec. 4.1), theta > 0; 1 is off.

    For each token id in ``generated_ids`` (counted once however often it occurs; negative
    ids, e.g. padding, are ignored): logit / theta if the logit is > 0, else logit * theta.
    The caller decides whether ``generated_ids`` includes the prompt (transformers does).
    """

    penalty: float
    rank: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_positive("repetition_penalty", self.penalty)

    @property
    def active(self) -> bool:
        """False when this setting changes nothing (so ``from_settings`` leaves it out)."""
        return self.penalty != 1

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        if generated_ids is None or generated_ids.shape[1] == 0 or self.penalty == 1:
            return logits
        batch, vocab = logits.shape
        ids = torch.where(generated_ids < 0, vocab, generated_ids).to(device=logits.device, dtype=torch.long)  # (B, T)
        out = torch.cat((logits, logits.new_zeros(batch, 1)), dim=1)  # (B, V + 1); the last column takes the ignored
        seen = out.gather(1, ids)  # (B, T), original logits (a repeated id writes the same value twice)
        out.scatter_(1, ids, torch.where(seen > 0, seen / self.penalty, seen * self.penalty))
        return out[:, :vocab]


@dataclass(frozen=True)
class Temperature:
    """Divide the logits by T >= 0 (finite). T = 0 keeps only the first argmax (greedy)."""

    temperature: float
    rank: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise UserError("temperature must be a finite number >= 0", self.temperature,
                            "pass e.g. 0.8, or 0 for greedy")

    @property
    def active(self) -> bool:
        """False when this setting changes nothing (so ``from_settings`` leaves it out)."""
        return self.temperature != 1

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.temperature == 0:
            best = logits.argmax(dim=-1, keepdim=True)  # (B, 1), first maximum
            return torch.full_like(logits, NEG_INF).scatter(1, best, logits.gather(1, best))
        if self.temperature == 1:
            return logits
        return logits / self.temperature


@dataclass(frozen=True)
class TopK:
    """Keep the k largest logits, k >= 0 (0 is off); ties with the k-th largest are kept."""

    k: int
    rank: ClassVar[int] = 3

    def __post_init__(self) -> None:
        check_whole("top_k", self.k, allow_zero=True)

    @property
    def active(self) -> bool:
        """False when this setting changes nothing (so ``from_settings`` leaves it out)."""
        return self.k != 0

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.k == 0 or self.k >= logits.shape[-1]:
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, NEG_INF)


@dataclass(frozen=True)
class TopP:
    """Nucleus filtering (Holtzman et al. 2020, Sec. 3.1), 0 < p <= 1 (1 is off).

    Sort tokens by probability, most probable first; keep the shortest prefix whose
    cumulative probability is >= p (a token is kept when the mass before it is < p, so
    the most probable token always is), plus any token tied with the prefix's last one.
    """

    p: float
    rank: ClassVar[int] = 4

    def __post_init__(self) -> None:
        check_fraction("top_p", self.p)

    @property
    def active(self) -> bool:
        """False when this setting changes nothing (so ``from_settings`` leaves it out)."""
        return self.p != 1

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.p == 1:
            return logits
        vocab = logits.shape[-1]
        exact = logits if logits.dtype == torch.float64 else logits.float()
        log_z = torch.logsumexp(exact, dim=-1, keepdim=True).double()  # (B, 1)
        k = min(vocab, _FIRST_K)
        while True:  # look at the k most probable tokens; widen k until every row's prefix ends inside
            if k < vocab:
                ordered = torch.topk(logits, k, dim=-1).values  # (B, k), descending
            else:
                ordered = torch.sort(logits, dim=-1, descending=True).values  # (B, V)
            probs = torch.exp(ordered.double() - log_z)  # (B, k)
            mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, k)
            inside = mass_before < self.p  # (B, k)
            if k == vocab or not bool(inside[:, -1].any()):
                break
            grown = _GROWTH * k
            k = grown if 4 * grown < vocab else vocab  # near the vocabulary size a full sort is as cheap
        n_keep = inside.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, 1)
        threshold = ordered.gather(1, n_keep - 1)  # (B, 1), logit of the prefix's last token
        return logits.masked_fill(logits < threshold, NEG_INF)


@dataclass(frozen=True)
class MinP:
    """Min-p filtering (Nguyen et al. 2024), 0 <= min_p <= 1 (0 is off): keep p >= min_p * p_max."""

    min_p: float
    rank: ClassVar[int] = 5

    def __post_init__(self) -> None:
        check_positive("min_p", self.min_p, allow_zero=True)
        if self.min_p > 1:
            raise UserError("min_p must be in [0, 1]", self.min_p, "pass e.g. 0.05 (a fraction of p_max); 0 is off")

    @property
    def active(self) -> bool:
        """False when this setting changes nothing (so ``from_settings`` leaves it out)."""
        return self.min_p != 0

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.min_p == 0:
            return logits
        # p >= min_p * p_max  <=>  logit >= max logit + log(min_p): no softmax needed
        floor = logits.max(dim=-1, keepdim=True).values.double() + math.log(self.min_p)  # (B, 1)
        return logits.masked_fill(logits < floor, NEG_INF)  # compared in float64 by type promotion


Processor = RepetitionPenalty | Temperature | TopK | TopP | MinP
ORDER: tuple[type, ...] = (RepetitionPenalty, Temperature, TopK, TopP, MinP)


class LogitsChain:
    """The processors in ``ORDER`` (each at most once; a no-op one may be left out).

    ``chain(logits (B, V), generated_ids (B, T) | None) -> logits (B, V)`` with the
    filtered entries at -inf; ``lmforge.generate.engine.draw`` draws from it (the one drawing path).
    """

    def __init__(self, processors: Sequence[Processor] = ()):
        processors = tuple(processors)
        for p in processors:
            if not isinstance(p, ORDER):
                raise UserError("not a logits processor", type(p).__name__,
                                "use " + ", ".join(c.__name__ for c in ORDER))
        ranks = [p.rank for p in processors]
        if ranks != sorted(set(ranks)):
            raise UserError("logits processors out of order or repeated", [type(p).__name__ for p in processors],
                            "give each at most once, in the order " + " -> ".join(c.__name__ for c in ORDER))
        self.processors = processors

    @classmethod
    def from_settings(
        cls,
        *,
        temperature: float = 1.0,
        top_k: int | None = 0,
        top_p: float | None = 1.0,
        min_p: float | None = 0.0,
        repetition_penalty: float | None = 1.0,
    ) -> LogitsChain:
        """The chain for these settings, each validated; None means off (like 0 / 1)."""
        steps: list[Processor] = [
            RepetitionPenalty(1.0 if repetition_penalty is None else repetition_penalty),
            Temperature(temperature),
            TopK(0 if top_k is None else top_k),
            TopP(1.0 if top_p is None else top_p),
            MinP(0.0 if min_p is None else min_p),
        ]
        return cls([s for s in steps if s.active])

    @property
    def greedy(self) -> bool:
        """True when the chain holds ``Temperature(0)``: the next token is the argmax."""
        return any(isinstance(p, Temperature) and p.temperature == 0 for p in self.processors)

    def __call__(self, logits: torch.Tensor, generated_ids: torch.Tensor | None = None) -> torch.Tensor:
        _check_logits(logits, generated_ids)
        for processor in self.processors:
            logits = processor(logits, generated_ids)
        return logits

    def __repr__(self) -> str:
        return f"LogitsChain({list(self.processors)!r})"
