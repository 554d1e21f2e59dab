"""The text layer above the decoding loop (lmforge.generate.text): incremental decoding
equals decoding the whole output, at every prefix, for byte-level and SentencePiece-style
(Metaspace) vocabularies; a stop string split across tokens ends the output where
decoding the whole output would; the decoding work per token does not grow with the output."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.data.tokenizer import train_tokenizer
from lmforge.generate.text import GenerationResult, IncrementalDecoder, TextOutput

TEXTS = ["the cat sat on the mat, said the reader: café, naïve, 日本語, Ελληνικά and 🙂🙃 ok."] * 40
SAMPLES = ["café naïve", "日本語 and 🙂", "Ελληνικά", "the cat 🙃🙂 sat", "a", "🙂", "ok. 日本 café 😀 ∑ ß"]


@pytest.fixture(scope="module")
def merged():
    """Byte-level BPE with merges (lmforge's own tokenizer kind)."""
    return train_tokenizer(TEXTS, 460)


@pytest.fixture(scope="module")
def bytes_only():
    """Byte-level, no merges: every multi-byte character is split across tokens."""
    return train_tokenizer(TEXTS, 360)


@pytest.fixture(scope="module")
def metaspace():
    """SentencePiece-style: a leading-space marker that a sequence's first token drops."""
    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>"]))
    return tok


def sequences(encode, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Encodings of multi-byte texts, and random ids (arbitrary, often invalid, byte runs)."""
    rnd = random.Random(seed)
    return [encode(t) for t in SAMPLES] + [[rnd.randrange(vocab_size) for _ in range(rnd.randint(1, 40))]
                                           for _ in range(60)]


def check_every_prefix(decode, ids: list[int]) -> None:
    decoder, committed = IncrementalDecoder(decode), ""
    for n, token in enumerate(ids, 1):
        committed += decoder.push(token)
        assert committed + decoder.pending == decode(ids[:n]), (ids, n)
        assert not committed.endswith("\ufffd")  # an incomplete character is never committed


@pytest.mark.parametrize("which", ["merged", "bytes_only"])
def test_incremental_equals_full_decoding_on_every_prefix_byte_level(which, request):
    tok = request.getfixturevalue(which)
    for ids in sequences(tok.encode, tok.vocab_size):
        check_every_prefix(tok.decode, ids)


def test_incremental_equals_full_decoding_on_every_prefix_metaspace(metaspace):
    for ids in sequences(lambda t: metaspace.encode(t).ids, metaspace.get_vocab_size()):
        check_every_prefix(metaspace.decode, ids)


def test_the_decoding_work_per_token_does_not_grow_with_the_output(merged):
    """Ids handed to decode over a 3,000-token output: a few per token (the window since the
    last complete character), not the whole output each time (4.5 million)."""
    ids = merged.encode(" ".join(SAMPLES) * 100)[:3000]
    seen = []

    def decode(part: list[int]) -> str:
        seen.append(len(part))
        return merged.decode(part)

    output = TextOutput(GenerationResult("", []), 0, type("T", (), {"decode": staticmethod(decode)})(), [], None)
    for token in ids:
        output.add(token, 0.0, None, last=False)
    assert output.text() == merged.decode(ids)
    assert len(ids) == 3000 and sum(seen) < 8 * len(ids) and max(seen) <= 8, (sum(seen), max(seen))


def run_output(tok, ids: list[int], stop: list[str]) -> tuple[GenerationResult, list[str]]:
    pieces: list[str] = []
    result = GenerationResult("", [])
    output = TextOutput(result, 0, tok, stop, lambda row, piece: pieces.append(piece))
    for i, token in enumerate(ids):
        output.add(token, -float(i), None, last=i == len(ids) - 1)
        if output.done:
            break
    return result, pieces


def expected_stop(tok, ids: list[int], stop: str) -> tuple[str, list[int]]:
    """Where decoding the whole output after each token first shows the stop string: the
    text before it, and the longest run of tokens whose text lies wholly before it."""
    for n in range(1, len(ids) + 1):
        text = tok.decode(ids[:n])
        if stop in text:
            text = text[: text.find(stop)]
            keep = max(k for k in range(n + 1) if text.startswith(tok.decode(ids[:k])))
            return text, ids[:keep]
    raise AssertionError("the stop string never appears")


@pytest.mark.parametrize(("text", "stop"), [
    ("ab café xyz", "fé"),  # é's two bytes are two tokens (bytes_only), f another
    ("the cat 🙂 sat", "🙂 s"),  # a four-byte character and what follows
    ("naïve 日本語 ok", "本語"),
    ("abc", "abc"),  # the whole output
])
@pytest.mark.parametrize("which", ["merged", "bytes_only"])
def test_a_stop_string_across_tokens_stops_where_whole_decoding_would(which, text, stop, request):
    tok = request.getfixturevalue(which)
    ids = tok.encode(text)
    result, pieces = run_output(tok, ids, [stop, "never"])
    want_text, want_ids = expected_stop(tok, ids, stop)
    assert result.finish_reason == "stop"
    assert result.text == want_text and result.ids == want_ids
    assert result.logprobs == [-float(i) for i in range(len(want_ids))]
    assert "".join(pieces) == want_text  # the stream never showed a part of the stop string


def test_a_stop_string_split_over_two_merged_tokens(merged):
    """A stop string made of the end of one BPE token and the start of the next."""
    ids = merged.encode("the cat sat on the mat, said the reader")
    texts = [merged.decode([i]) for i in ids]
    j = next(j for j in range(len(ids) - 1) if len(texts[j]) > 1 and len(texts[j + 1]) > 1)
    stop = texts[j][-1] + texts[j + 1][0]
    result, pieces = run_output(merged, ids, [stop])
    want_text, want_ids = expected_stop(merged, ids, stop)
    assert (result.text, result.ids, result.finish_reason) == (want_text, want_ids, "stop")
    assert "".join(pieces) == want_text


def test_streamed_pieces_join_into_the_text_and_hold_incomplete_characters(bytes_only):
    ids = bytes_only.encode("日本語 and 🙂 café")
    result, pieces = run_output(bytes_only, ids, [])
    assert result.finish_reason == "length" and result.text == bytes_only.decode(ids)
    assert "".join(pieces) == result.text
    assert not any("\ufffd" in p for p in pieces)  # each character streamed once it is whole
    assert len(pieces) == len("日本語 and 🙂 café")  # one piece per character: bytes_only has no merges


def test_an_output_cut_by_eos_or_length_keeps_its_incomplete_tail(bytes_only):
    """Bytes of an unfinished character at the end are the text decode gives (U+FFFD), as before."""
    ids = bytes_only.encode("ab🙂")[:-2]  # two of the emoji's four bytes
    result, pieces = run_output(bytes_only, ids, [])
    assert result.text == bytes_only.decode(ids) and result.text.startswith("ab") and "\ufffd" in result.text
    assert "".join(pieces) == result.text
