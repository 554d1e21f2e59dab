"""Generating token ids from a trained model; a simple sampler for now (the full engine with
logits processors comes in the generation issue)."""

from lmforge.generate.sample import sample

__all__ = ["sample"]
