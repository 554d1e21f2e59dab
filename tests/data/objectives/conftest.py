"""A small trained byte-level BPE with lmforge's special tokens, shared by the objective tests."""

from __future__ import annotations

import pytest

from lmforge.data.tokenizer import Tokenizer, train_tokenizer

TEXT = [
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on in the warm afternoon sun.",
    "Masked language models predict hidden tokens from both sides; encoders learn bidirectional context.",
    "Span corruption replaces random spans with sentinel tokens, and the decoder writes the missing spans.",
    "Text infilling hides Poisson-length spans behind one mask token each: extraordinary, unbelievable words.",
    "def tokenize(text):\n    return [word for word in text.split()]  # whitespace-delimited words\n",
] * 10


@pytest.fixture(scope="package")
def tok() -> Tokenizer:
    return train_tokenizer(TEXT, 420, n_sentinels=40)
