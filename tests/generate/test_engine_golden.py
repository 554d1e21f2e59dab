"""The engine's outputs for fixed seeds equal those recorded from the engine before
incremental detokenization (commit d707c1a's ``lmforge/generate/engine.py``, which decoded
the whole output again at every token): ids, text, log-probabilities, finish reasons and
the streamed pieces, greedy and sampled, one prompt and a left-padded batch, GPT-2, Llama
and T5 layouts, with stop strings and multi-byte characters split across tokens.

The models are random float64 tiny presets (the same on every machine: the CPU generator
is seeded, and float64 leaves no near-ties for the argmax or the draws to fall on); the
tokenizer is trained here on text with multi-byte characters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import train_tokenizer
from lmforge.generate.config import GenerateConfig
from lmforge.generate.engine import generate
from lmforge.models import build_model
from lmforge.plan.presets import get_preset

GOLDEN = Path(__file__).parent / "data" / "engine_golden.json"
TEXTS = ["the cat sat on the mat, said the reader: café, naïve, 日本語 and 🙂."] * 40
SAMPLED = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "max_new_tokens": 40, "seed": 7}
CASES = {  # name: (preset, prompts, settings)
    "gpt2-greedy-one": ("tiny-gpt2", ["the cat"], {"temperature": 0, "max_new_tokens": 40}),
    "gpt2-sampled-batch": ("tiny-gpt2", ["the cat", "日本", "café, naïve"], {**SAMPLED, "num_samples": 2}),
    "gpt2-sampled-stops": ("tiny-gpt2", ["the cat", "said the"], {**SAMPLED, "stop": ["é", "at", "🙂"]}),
    "llama-greedy-batch": ("tiny-llama", ["the cat", "日本", "café, naïve"], {"temperature": 0, "max_new_tokens": 40,
                                                                         "repetition_penalty": 1.3}),
    "llama-sampled-one": ("tiny-llama", ["naïve"], {**SAMPLED, "min_p": 0.02, "stop": ["語 a"]}),
    # a random T5 repeats itself without a penalty
    "t5-greedy": ("tiny-t5", ["café", "the cat sat"], {"temperature": 0, "max_new_tokens": 30,
                                                      "repetition_penalty": 1.5}),
    "t5-sampled-stops": ("tiny-t5", ["the cat sat"], {"temperature": 1.0, "top_k": 0, "max_new_tokens": 40, "seed": 7,
                                                      "repetition_penalty": 1.5, "stop": [" sat", "ead"]}),
}


def tokenizer():
    return train_tokenizer(TEXTS, 420)


def build(preset: str, tok):
    spec = get_preset(preset).spec.with_(vocab_size=tok.vocab_size, context=64)
    torch.manual_seed(0)
    model = build_model(spec).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # wider logits than the init's: varied tokens, multi-byte ones among them
    return model


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_equal_the_previous_engines(name, tok):
    preset, prompts, settings = CASES[name]
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    pieces: list[list] = []
    results = generate(build(preset, tok), tok, prompts, GenerateConfig(**settings),
                       on_token=lambda row, piece: pieces.append([row, piece]))
    got = [r.to_dict() for r in results]
    for new, old in zip(got, expected["results"], strict=True):
        assert new["ids"] == old["ids"] and new["text"] == old["text"], (name, new, old)
        assert new["finish_reason"] == old["finish_reason"]
        assert new["logprobs"] == pytest.approx(old["logprobs"], abs=1e-9)
    assert pieces == expected["stream"]
