"""The decode-time weight layout (lmforge.generate.layout): either layout, forced, gives the
same outputs; the weights come back row-major and bit for bit, tied ones still tied, even
when decoding fails; a bad LMFORGE_DECODE_LAYOUT is one line."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.tokenizer import train_tokenizer
from lmforge.errors import UserError
from lmforge.generate.config import GenerateConfig
from lmforge.generate.engine import generate
from lmforge.generate.layout import ENV, GAIN, LayoutTiming, choose, decode_layout, linear_weights, probe
from lmforge.models import build_model
from lmforge.plan.presets import get_preset


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["the cat sat on the mat, said the reader."] * 40, 400)


@pytest.fixture(scope="module")
def model(tok):
    spec = get_preset("tiny-gpt2").spec.with_(vocab_size=tok.vocab_size, context=64)
    torch.manual_seed(0)
    return build_model(spec).double()  # float64: the two layouts' sums agree to ~1e-15


@pytest.mark.parametrize("config", [GenerateConfig(temperature=0, max_new_tokens=20),
                                    GenerateConfig(max_new_tokens=20, seed=3, num_samples=2)],
                         ids=["greedy", "sampled"])
def test_both_layouts_give_the_same_outputs(model, tok, monkeypatch, config):
    outputs = {}
    for layout in ("rows", "columns"):
        monkeypatch.setenv(ENV, layout)
        outputs[layout] = generate(model, tok, ["the cat", "mat, said the"], config)
    for a, b in zip(outputs["rows"], outputs["columns"], strict=True):
        assert a.ids == b.ids and a.text == b.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-9)


def test_weights_come_back_row_major_bit_for_bit_and_tied(model, monkeypatch):
    monkeypatch.setenv(ENV, "columns")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.lm_head.weight is model.tok_emb.weight
    with decode_layout(model, rows=1, steps=100) as layout:
        assert layout == "columns"
        moved = linear_weights(model)
        assert moved and all(w.t().is_contiguous() and not w.is_contiguous() for w in moved)
        assert model.lm_head.weight is model.tok_emb.weight  # moved once, still shared
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].is_contiguous() for k in before)
    assert model.lm_head.weight is model.tok_emb.weight


def test_weights_come_back_when_decoding_fails(model, monkeypatch):
    monkeypatch.setenv(ENV, "columns")
    with pytest.raises(RuntimeError, match="boom"), decode_layout(model, rows=1, steps=100):
        raise RuntimeError("boom")
    assert all(w.is_contiguous() for w in linear_weights(model))


def test_the_probe_decides_when_nothing_is_forced(model, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    largest = max(linear_weights(model), key=lambda w: w.numel())
    timing = probe(*largest.shape, 1, largest.dtype, torch.get_num_threads())
    for steps in (1, 10_000):
        assert choose(model, rows=1, steps=steps) == ("columns" if timing.columns_pay(steps) else "rows")
    assert choose(torch.nn.Sequential(torch.nn.ReLU()), rows=1, steps=100) == "rows"  # no linear weight


def test_columns_only_when_the_tokens_repay_the_move():
    """1.0 s row-major, 0.5 s column-major, 10 s to move: 2 x 10 s = 20 s needs > 40 steps."""
    timing = LayoutTiming(row_major=1.0, column_major=0.5, move=10.0)
    assert not timing.columns_pay(40) and timing.columns_pay(41)
    slower = LayoutTiming(row_major=1.0, column_major=1.0 / (GAIN - 0.01), move=0.0)  # under the gain
    assert not slower.columns_pay(10**9)


def test_a_bad_forced_layout_is_one_line(model, monkeypatch):
    monkeypatch.setenv(ENV, "diagonal")
    with pytest.raises(UserError, match=f"{ENV} must be rows or columns"):
        choose(model, rows=1, steps=100)
