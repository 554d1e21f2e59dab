"""File readers: blank-line documents, JSON lines, Parquet, gzip; bad bytes replaced or skipped, counted."""

from __future__ import annotations

import gzip
import json
import os
import random
import sys
import tracemalloc

import pytest

from lmforge.data.pieces import MAX_PIECE_CHARS
from lmforge.data.readers import ReadStats, looks_binary, read_file, require_pyarrow, split_documents
from lmforge.errors import UserError


def read(path, **kw):
    stats = ReadStats()
    return list(read_file(path, stats, **kw)), stats


def test_blank_lines_separate_documents(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"first line\nstill first\n\nsecond\n \t \n\n\n  third  \r\n\r\nfourth\rline\n\n\n")
    docs, stats = read(p)
    assert docs == ["first line\nstill first", "second", "third", "fourth\nline"]
    assert (stats.files, stats.documents, stats.bytes) == (1, 4, sum(len(d.encode()) for d in docs))
    assert stats.input_bytes == p.stat().st_size
    whole, _ = read(p, whole=True)
    assert whole == ["first line\nstill first\n\nsecond\n \t \n\n\n  third  \n\nfourth\nline"]


def test_chunk_boundaries_do_not_matter():
    rng = random.Random(0)
    text = "".join(rng.choice(["word", " ", "\n", "\n\n", " \n \n", "é😀", "\t"]) for _ in range(2000))
    expected = list(split_documents([text], ReadStats(), whole=False, max_chars=10**6))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 30))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(split_documents(chunks, ReadStats(), whole=False, max_chars=10**6)) == expected


def test_long_documents_come_in_pieces():
    stats = ReadStats()
    text = "one two three four five six seven eight nine ten " * 10 + "\n\nshort\n\n" + "z" * 25
    docs = list(split_documents([text[i : i + 7] for i in range(0, len(text), 7)], stats, whole=False, max_chars=20))
    assert all(len(d) <= 20 for d in docs)
    assert " ".join(docs[:-3]).split() == ("one two three four five six seven eight nine ten " * 10).split()
    assert docs[-3:] == ["short", "z" * 20, "z" * 5]
    assert stats.split_documents == 2 and stats.documents == len(docs)


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("café ".encode("latin-1") + b"ok \xff\xfe end\n\n" + "genuine \ufffd kept".encode())
    docs, stats = read(p)
    assert docs == ["caf\ufffd ok \ufffd\ufffd end", "genuine \ufffd kept"]
    assert stats.replaced_chars == 3  # the genuine U+FFFD is not counted
    assert stats.skipped_files == 0


@pytest.mark.parametrize(
    "payload",
    [random.Random(1).randbytes(20_000), b"\x00\x01" * 5000, "utf-16 text".encode("utf-16")],
)
def test_binary_files_are_skipped_and_counted(tmp_path, payload):
    p = tmp_path / "blob.txt"
    p.write_bytes(payload)
    docs, stats = read(p)
    assert docs == [] and stats.skipped_files == 1 and stats.files == 0
    assert "blob.txt" in stats.warnings[0] and "skipped" in stats.warnings[0]


def test_looks_binary_threshold():
    assert not looks_binary(b"") and not looks_binary("plain ☃ text".encode())
    assert not looks_binary(b"text " * 100 + b"\xff" * 10)  # a few bad bytes: read and replaced
    assert looks_binary(b"\x00" * 40 + b"a" * 60)


def test_jsonl_fields_and_bad_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"text": "first", "id": 1}),
        "{broken json",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": 42}),
        "",
        json.dumps({"text": "lone \ud800 surrogate"}),
        json.dumps({"text": "emoji 😀 escaped"}, ensure_ascii=True),
        json.dumps(["not", "an", "object"]),
        b"\xff\xfe".decode("latin-1"),
    ]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, stats = read(p)
    assert docs == ["first", "lone \ufffd surrogate", "emoji 😀 escaped"]
    assert all(d.encode("utf-8") for d in docs)  # no lone surrogates reach the tokenizer
    assert stats.bad_records == 5 and stats.replaced_chars == 1
    assert "skipped 5 bad line(s)" in stats.warnings[0] and "line 2 is not JSON" in stats.warnings[0]


def test_jsonl_dotted_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"meta": {"body": "nested"}}) + "\n" + json.dumps({"meta.body": "flat"}) + "\n")
    docs, _ = read(p, field="meta.body")
    assert docs == ["nested", "flat"]


def test_gzip_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"one\n\ntwo"))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "three"}\n'))
    assert read(tmp_path / "a.txt.gz")[0] == ["one", "two"]
    assert read(tmp_path / "b.jsonl.gz")[0] == ["three"]


def test_truncated_gzip_warns_and_keeps_going(tmp_path):
    data = gzip.compress(("line of text\n\n" * 20_000).encode())
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(data[: len(data) // 2])
    docs, stats = read(p)
    assert 0 < len(docs) < 20_000
    assert any("unreadable" in w for w in stats.warnings)
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"not gzip at all")
    docs, stats = read(junk)
    assert docs == [] and stats.skipped_files == 1


def test_parquet_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "t.parquet"
    table = pa.table({"content": ["alpha", None, "beta", "  ", "gamma " * 3], "n": [1, 2, 3, 4, 5]})
    pq.write_table(table, p, row_group_size=2)
    docs, stats = read(p, field="content")
    assert docs == ["alpha", "beta", ("gamma " * 3).strip()]
    assert stats.bad_records == 1 and stats.files == 1
    with pytest.raises(UserError, match="no column 'text'.*content, n"):
        read(p)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    docs, stats = read(fake)
    assert docs == [] and stats.skipped_files == 1


def test_missing_pyarrow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="pip install pyarrow"):
        require_pyarrow()


def test_unreadable_file_is_a_user_error(tmp_path):
    p = tmp_path / "secret.txt"
    p.write_text("x")
    os.chmod(p, 0)
    try:
        if os.access(p, os.R_OK):  # running as root: permissions do not apply
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(UserError, match="cannot read file"):
            read(p)
    finally:
        os.chmod(p, 0o600)


def test_a_50mb_line_streams_in_bounded_memory(tmp_path):
    """One 50 MB line: read in 1 MB chunks, yielded as pieces of at most MAX_PIECE_CHARS, cut at spaces."""
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "délta", "naïve", "world", "the", "of", "and", "1234"]
    block = " ".join(rng.choices(words, k=50_000)) + " "
    p = tmp_path / "line.txt"
    with open(p, "w", encoding="utf-8") as f:
        while f.tell() < 50_000_000:
            f.write(block)
    size = p.stat().st_size
    stats = ReadStats()
    tracemalloc.start()
    try:
        n_pieces, total = 0, 0
        for piece in read_file(p, stats):
            assert 0 < len(piece) <= MAX_PIECE_CHARS and not piece[0].isspace() and not piece[-1].isspace()
            n_pieces += 1
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n_chars = len(p.read_text(encoding="utf-8").rstrip())
    assert n_pieces >= n_chars / MAX_PIECE_CHARS
    assert total + (n_pieces - 1) == n_chars  # only the single spaces at the cuts were dropped
    assert stats.split_documents == 1 and stats.input_bytes == size
    assert peak < 40_000_000  # a few chunks, never the whole line
