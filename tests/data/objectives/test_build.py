"""build_objective_batch: defaults from the tokenizer, refusals; Tokenizer.word_starts for whole-word masking."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.data.objectives import (
    IGNORE,
    OBJECTIVES,
    build_objective_batch,
    reconstruct_infilling,
    reconstruct_masked,
    reconstruct_span_corruption,
    special_token_ids,
)
from lmforge.data.tokenizer import EOS, Tokenizer
from lmforge.errors import UserError

from .conftest import TEXT


def _windows(tok: Tokenizer, n: int = 8, length: int = 64) -> np.ndarray:
    """Packed windows of real text with eos between documents, as the mixture gives them."""
    ids = []
    for line in TEXT[:5]:
        ids += tok.encode(line) + [tok.eos_id]
    ids = np.array(ids * 10)
    return np.stack([ids[i * 17 : i * 17 + length] for i in range(n)])


def _gpt2_like() -> Tokenizer:
    """Byte-level BPE with only <|endoftext|>: no pad, mask, bos or sentinels (GPT-2's layout)."""
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[], show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    inner.train_from_iterator(TEXT, trainer=trainer)
    inner.add_special_tokens([EOS])
    return Tokenizer(inner)


def test_each_objective_with_the_tokenizers_defaults(tok):
    windows = _windows(tok)
    specials = special_token_ids(tok)
    assert {tok.eos_id, tok.bos_id, tok.pad_id, tok.mask_id, *tok.sentinel_ids} == specials
    mlm = build_objective_batch("mlm", windows, np.random.default_rng(0), tok)
    chosen = mlm.labels != IGNORE
    assert not np.isin(windows[chosen], list(specials)).any() and (mlm.input_ids[chosen] == tok.mask_id).any()
    assert all((a == b).all() for a, b in zip(reconstruct_masked(mlm), windows, strict=True))
    span = build_objective_batch("span", windows, np.random.default_rng(0), tok)
    assert (span.decoder_input_ids[:, 0] == tok.bos_id).all() and (span.labels[:, 0] == tok.sentinel_ids[0]).all()
    assert all(
        (a == b).all()
        for a, b in zip(reconstruct_span_corruption(span, tok.sentinel_ids, tok.eos_id), windows, strict=True)
    )
    infill = build_objective_batch("infill", windows, np.random.default_rng(0), tok)
    assert (infill.input_ids[~infill.attention_mask] == tok.pad_id).all() and (~infill.attention_mask).any()
    assert all(
        (a == b).all() for a, b in zip(reconstruct_infilling(infill, tok.mask_id, tok.eos_id), windows, strict=True)
    )
    again = build_objective_batch("infill", windows, np.random.default_rng(0), tok)
    assert (again.input_ids == infill.input_ids).all()
    assert OBJECTIVES == ("mlm", "span", "infill")


def test_options_reach_the_builders(tok):
    windows = _windows(tok, 32)
    rng = np.random.default_rng(1)
    mlm = build_objective_batch("mlm", windows, rng, tok, rate=0.5, mask_frac=1.0, random_frac=0.0, whole_word=True)
    chosen = mlm.labels != IGNORE
    assert chosen.sum() > 0.4 * (~np.isin(windows, list(special_token_ids(tok)))).sum()
    assert (mlm.input_ids[chosen] == tok.mask_id).all()
    span = build_objective_batch("span", windows, rng, tok, noise_density=0.5, mean_span_length=2.0, decoder_start_id=7)
    assert (span.decoder_input_ids[:, 0] == 7).all() and span.labels.shape[1] == 32 + 16 + 1  # 0.5 * 64, 32 / 2, eos
    infill = build_objective_batch("infill", windows, rng, tok, mask_ratio=0.5, poisson_lambda=1.0)
    assert (infill.attention_mask.sum(1) <= 65).all()


def test_a_tokenizer_without_pad_mask_or_sentinels():
    """pad and decoder start fall back to eos; mlm and infill need a mask token, span needs sentinels."""
    gpt2 = _gpt2_like()
    assert gpt2.pad_id is None and gpt2.mask_id is None and not gpt2.sentinel_ids
    windows = np.array([gpt2.encode(TEXT[0])[:20]] * 2)
    for name in ("mlm", "infill"):
        with pytest.raises(UserError, match="mask token"):
            build_objective_batch(name, windows, np.random.default_rng(0), gpt2)
    with pytest.raises(UserError, match="sentinel"):
        build_objective_batch("span", windows, np.random.default_rng(0), gpt2)
    batch = build_objective_batch(
        "infill", [windows[0], windows[0][:5]], np.random.default_rng(0), gpt2, mask_id=gpt2.vocab_size - 2
    )
    assert (batch.input_ids[~batch.attention_mask] == gpt2.eos_id).all()
    assert (batch.decoder_input_ids[:, 0] == gpt2.eos_id).all()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("bert", {}),
        ("causal", {}),
        ("span", {"rate": 0.1}),
        ("mlm", {"noise_density": 0.1}),
        ("infill", {"whole_word": True}),
    ],
)
def test_unknown_names_and_options_are_refused(tok, name, options):
    with pytest.raises(UserError):
        build_objective_batch(name, _windows(tok), np.random.default_rng(0), tok, **options)


def test_word_starts_marks_whitespace_initial_and_special_tokens(tok):
    starts = tok.word_starts()
    assert starts.shape == (tok.vocab_size,) and starts.dtype == bool
    assert starts[sorted(special_token_ids(tok))].all()
    for tid in range(tok.vocab_size):
        text = tok.decode([tid])
        if tid not in special_token_ids(tok):
            assert starts[tid] == (text[:1] in (" ", "\n", "\t", "\r", "\x0b", "\x0c")), (tid, text)
    starts[:] = False  # a copy: the cached flags are untouched
    assert tok.word_starts()[tok.eos_id]


def test_word_starts_group_tokens_into_whitespace_words(tok):
    text = " ".join(TEXT[3].split() + TEXT[1].split())
    ids = tok.encode(text)
    starts = tok.word_starts()[ids]
    starts[0] = True
    bounds = [*np.flatnonzero(starts), len(ids)]
    words = [tok.decode(ids[a:b]).strip() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert words == text.split() and len(ids) > len(words)


def test_word_starts_for_wordpiece_and_sentencepiece_vocabularies():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[SEP]": 3, "play": 4, "##ing": 5, "the": 6, "##s": 7}
    wordpiece = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.add_special_tokens(["[PAD]", "[UNK]", "[MASK]", "[SEP]"])
    assert Tokenizer(wordpiece).word_starts().tolist() == [True, True, True, True, True, False, True, False]
    pieces = {"<unk>": 0, "</s>": 1, "▁play": 2, "ing": 3, "▁the": 4, "<0x0A>": 5, "<0xE2>": 6}
    sentencepiece = HFTokenizer(models.BPE(pieces, [], unk_token="<unk>"))
    sentencepiece.add_special_tokens(["<unk>", "</s>"])
    assert Tokenizer(sentencepiece).word_starts().tolist() == [True, True, True, False, True, True, False]
