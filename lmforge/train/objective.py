"""The pretraining objective of a run: which one fits the model family, and its loss.

- ``causal`` (decoders): predict every next token (Radford et al. 2018);
- ``mlm`` (encoders): predict the chosen tokens of a masked input (Devlin et al. 2019);
- ``span`` (encoder-decoders): T5 span corruption (Raffel et al. 2020, Sec. 3.1.4);
- ``infill`` (encoder-decoders): BART text infilling (Lewis et al. 2020, Sec. 2.2).

The mixture gives windows of ``seq_len + 1`` packed tokens; the objective turns a window
into model inputs and targets. Corruption is random, drawn from a numpy Generator seeded
by (seed, step, micro-batch), so a resumed run corrupts exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.plan.specs import ModelSpec
from lmforge.train.config import ObjectiveConfig

FAMILY_OF = {"causal": "decoder", "mlm": "encoder", "span": "encoder-decoder", "infill": "encoder-decoder"}
EVAL_SEED_OFFSET = 10**12  # evaluation corruption never collides with training's


def resolve_objective(config: ObjectiveConfig, spec: ModelSpec, tokenizer: Tokenizer) -> str:
    """The objective's name, checked against the model family and the tokenizer."""
    name = config.name
    if name is None:
        if spec.family == "encoder-decoder":
            name = "span" if spec.positions == "relative" else "infill"
        else:
            name = "causal" if spec.family == "decoder" else "mlm"
    if FAMILY_OF[name] != spec.family:
        fits = [n for n, family in FAMILY_OF.items() if family == spec.family]
        raise UserError(
            "the objective does not fit the model family",
            f"objective.name={name} for a {spec.family} model ({spec.name})",
            "use objective.name " + " or ".join(fits),
        )
    if name in ("mlm", "infill") and tokenizer.mask_id is None:
        raise UserError(f"objective {name} needs a mask token", "the tokenizer has none",
                        "train a tokenizer with lmforge (it adds <|mask|>) or add a mask token")
    if name == "span" and not tokenizer.sentinel_ids:
        raise UserError("objective span needs sentinel tokens", "the tokenizer has none",
                        "train a tokenizer with lmforge (it adds 100 sentinels) or use objective.name infill")
    return name


@dataclass
class Objective:
    """Builds model inputs from token windows and computes the objective's loss."""

    name: str
    config: ObjectiveConfig
    tokenizer: Tokenizer
    seq_len: int

    def corrupt(self, windows: np.ndarray, rng: np.random.Generator):
        """An ``ObjectiveBatch`` from (n, seq_len + 1) windows (non-causal objectives)."""
        from lmforge.data.objectives import build_objective_batch

        c = self.config
        if self.name == "mlm":
            options = dict(rate=c.mask_rate, mask_frac=c.mask_token_frac, random_frac=c.random_token_frac,
                           whole_word=c.whole_word)
            tokens = windows[:, : self.seq_len]
        elif self.name == "span":
            options = dict(noise_density=c.noise_density, mean_span_length=c.mean_span_length)
            tokens = windows[:, : self.seq_len]
        else:  # infill: the target is the whole sequence plus eos, so leave room for it
            options = dict(mask_ratio=c.infill_ratio, poisson_lambda=c.poisson_lambda)
            tokens = windows[:, : self.seq_len - 1]
        return build_objective_batch(self.name, np.ascontiguousarray(tokens), rng, self.tokenizer, **options)

    def loss(
        self, model: torch.nn.Module, windows: torch.Tensor, rng: np.random.Generator, autocast
    ) -> tuple[torch.Tensor, int, int | None]:
        """(mean loss, number of targets, correct predictions for mlm else None).

        ``windows`` (n, seq_len + 1) token ids on the model's device; ``autocast`` a
        function returning the precision context for the forward pass.
        """
        if self.name == "causal":
            inputs, targets = windows[:, :-1], windows[:, 1:]
            with autocast():
                logits = model(inputs)  # (n, seq_len, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            return loss, targets.numel(), None
        batch = self.corrupt(windows.cpu().numpy(), rng)
        device = windows.device
        input_ids = torch.from_numpy(batch.input_ids).to(device)
        attention_mask = torch.from_numpy(batch.attention_mask).to(device)
        labels = torch.from_numpy(batch.labels).to(device)
        chosen = labels != -100  # (n, T)
        count = int(chosen.sum())
        if self.name == "mlm":  # the head runs on the chosen positions only (15%), not on every token
            with autocast():
                logits = model(input_ids, attention_mask, positions=chosen)  # (count, V)
            targets = labels[chosen]
            loss = F.cross_entropy(logits.float(), targets)
            return loss, count, int((logits.argmax(-1) == targets).sum())
        decoder_input_ids = torch.from_numpy(batch.decoder_input_ids).to(device)
        with autocast():
            logits = model(input_ids, attention_mask, decoder_input_ids)  # (n, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return loss, count, None


def micro_batch_rng(seed: int, step: int, micro: int) -> np.random.Generator:
    """The corruption randomness of one micro-batch: a pure function of its position."""
    return np.random.default_rng([seed, step, micro])
