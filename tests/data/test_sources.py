"""Source syntax, folders and globs in a fixed order, bad input, fingerprints, hf: through datasets."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest

from lmforge.data.readers import ReadStats
from lmforge.data.sources import (
    SourceSpec,
    input_fingerprint,
    iter_documents,
    parse_source,
    parse_sources,
    source_files,
    split_options,
)
from lmforge.errors import UserError


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("corpus/notes.txt", SourceSpec("notes", "corpus/notes.txt")),
        ("finance=data/fomc/:0.51", SourceSpec("finance", "data/fomc/", 0.51)),
        ("general=data/g.txt:0.49", SourceSpec("general", "data/g.txt", 0.49)),
        ("web=crawl/**/*.jsonl?field=body:2", SourceSpec("web", "crawl/**/*.jsonl", 2.0, "body")),
        ("notes/*.md?whole=1", SourceSpec("notes", "notes/*.md", whole=True)),
        ("data/file?.txt", SourceSpec("data", "data/file?.txt")),  # a glob's ? is not options
        ("x.jsonl.gz", SourceSpec("x", "x.jsonl.gz")),
        ("t.parquet?field=content", SourceSpec("t", "t.parquet", field="content")),
        ("builtin:pydocs", SourceSpec("pydocs", "builtin:pydocs")),
        ("syn=builtin:markov?order=3&alphabet=4:0.2", SourceSpec("syn", "builtin:markov?order=3&alphabet=4", 0.2)),
        ("hf:roneneldan/TinyStories:validation", SourceSpec("TinyStories", "hf:roneneldan/TinyStories:validation")),
        ("w=hf:wiki?config=raw-v1&field=page", SourceSpec("w", "hf:wiki?config=raw-v1", 1.0, "page")),
        ("zero=a.txt:0", SourceSpec("zero", "a.txt", 0.0)),
    ],
)
def test_parse_source(arg, expected):
    assert parse_source(arg) == expected


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("", "empty data source"),
        ("a.txt:-0.5", "must be zero or more"),
        ("a.txt?feild=x", "did you mean field"),
        ("a.txt?whole=maybe", "must be 1 or 0"),
        ("a.txt?field=a&field=b", "option given twice"),
        ("builtin:pydoc", "did you mean builtin:pydocs"),
        ("builtin:pydocs?x=1", "takes no options"),
        ("builtin:markov?ordr=2", "did you mean order"),
        ("name=", "no location"),
        ("hf:x?whole=1", "unknown option"),
    ],
)
def test_bad_source_syntax(arg, message):
    with pytest.raises(UserError, match=message):
        parse_source(arg)


def test_duplicate_names():
    with pytest.raises(UserError, match="two sources share a name"):
        parse_sources(["a/x.txt", "b/x.txt"])
    assert [s.name for s in parse_sources(["a/x.txt", "y=b/x.txt"])] == ["x", "y"]


def test_split_options():
    assert split_options("builtin:markov?order=2&seed=3") == ("builtin:markov", {"order": "2", "seed": "3"})
    assert split_options("dir/f?le*.txt") == ("dir/f?le*.txt", {})


def tree(tmp_path):
    root = tmp_path / "corpus"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b" / "deep" / "z.txt").write_text("deep one")
    (root / "b" / "2.txt").write_text("b two\n\nb two second")
    (root / "b" / "1.jsonl").write_text(json.dumps({"text": "b one json"}) + "\n")
    (root / "a.md").write_text("a markdown")
    (root / "A.txt").write_text("capital A")
    (root / ".hidden.txt").write_text("hidden")
    (root / ".git" / "x.txt").write_text("git internals")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "README").write_text("no suffix: ignored in a folder walk")
    return root


def test_folder_is_walked_recursively_sorted(tmp_path):
    root = tree(tmp_path)
    spec = parse_source(str(root))
    stats = ReadStats()
    docs = list(iter_documents(spec, stats))
    assert docs == ["capital A", "a markdown", "b one json", "b two", "b two second", "deep one"]
    assert list(iter_documents(spec)) == docs  # deterministic
    assert stats.files == 5 and stats.documents == 6 and stats.skipped_files == 0


def test_glob(tmp_path):
    root = tree(tmp_path)
    docs = list(iter_documents(parse_source(f"{root}/**/*.txt")))
    assert docs == ["capital A", "b two", "b two second", "deep one"]
    docs = list(iter_documents(parse_source(f"{root}/[ab]*")))  # a matched folder is walked
    assert docs == ["a markdown", "b one json", "b two", "b two second", "deep one"]
    with pytest.raises(UserError, match="no files match"):
        iter_documents(parse_source(f"{root}/*.nothing"))


def test_whole_option(tmp_path):
    (tmp_path / "doc.txt").write_text("para one\n\npara two\n")
    assert list(iter_documents(parse_source(f"{tmp_path}/doc.txt?whole=1"))) == ["para one\n\npara two"]
    assert list(iter_documents(parse_source(f"{tmp_path}/doc.txt"))) == ["para one", "para two"]


def test_missing_path_fails_before_reading(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        iter_documents(parse_source(str(tmp_path / "nope.txt")))  # raised at the call, not on next()


def test_empty_file_and_empty_folder(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="source empty has no text"):
        list(iter_documents(parse_source(str(tmp_path / "empty.txt"))))
    (tmp_path / "blank.txt").write_text("\n \n\t\n")
    with pytest.raises(UserError, match="has no text"):
        list(iter_documents(parse_source(str(tmp_path / "blank.txt"))))
    folder = tmp_path / "only_png"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match="folder has no text files"):
        iter_documents(parse_source(str(folder)))


def test_binary_only_source_says_why(tmp_path):
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(UserError, match="look binary"):
        list(iter_documents(parse_source(str(tmp_path / "blob.txt"))))


def test_binary_file_in_folder_is_skipped_and_counted(tmp_path):
    (tmp_path / "good.txt").write_text("fine text")
    (tmp_path / "bad.txt").write_bytes(b"\x00" * 1000)
    stats = ReadStats()
    assert list(iter_documents(parse_source(str(tmp_path)), stats)) == ["fine text"]
    assert stats.skipped_files == 1 and "bad.txt" in stats.warnings[0]


def test_jsonl_without_the_field_suggests_one(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError, match=r"\?field=NAME"):
        list(iter_documents(parse_source(str(tmp_path / "d.jsonl"))))
    assert list(iter_documents(parse_source(f"{tmp_path}/d.jsonl?field=body"))) == ["x"]


def test_fingerprint_follows_content_not_location(tmp_path):
    root = tree(tmp_path)
    spec = parse_source(str(root))
    first = input_fingerprint(spec)
    assert len(first) == 64 and input_fingerprint(spec) == first
    moved = shutil.copytree(root, tmp_path / "elsewhere")
    assert input_fingerprint(parse_source(str(moved))) == first
    (moved / "b" / "2.txt").write_text("b two\n\nb two changed")
    assert input_fingerprint(parse_source(str(moved))) != first
    (tmp_path / "new.txt").write_text("x")
    assert input_fingerprint(parse_source(f"{tmp_path / 'new.txt'}?whole=1")) != input_fingerprint(
        parse_source(str(tmp_path / "new.txt"))
    )
    assert source_files(spec)[0] == root


def test_builtin_fingerprints():
    markov = input_fingerprint(parse_source("builtin:markov"))
    assert markov == input_fingerprint(parse_source("builtin:markov?seed=0&order=2"))  # defaults spelled out
    assert markov != input_fingerprint(parse_source("builtin:markov?seed=1"))
    assert markov != input_fingerprint(parse_source("builtin:markov?docs=10"))
    assert input_fingerprint(parse_source("builtin:pydocs")) != markov


def test_markov_source_options():
    docs = list(iter_documents(parse_source("builtin:markov?order=1&alphabet=xyz&docs=3&length=50&seed=4")))
    assert len(docs) == 3 and all(len(d) == 50 and set(d) <= set("xyz") for d in docs)
    with pytest.raises(UserError, match="must be a number"):
        iter_documents(parse_source("builtin:markov?order=two"))
    with pytest.raises(UserError, match="alphabet size"):
        iter_documents(parse_source("builtin:markov?alphabet=40"))
    with pytest.raises(UserError, match="markov docs must be positive"):
        iter_documents(parse_source("builtin:markov?docs=0"))


def fake_datasets(monkeypatch, rows=None, fail=None, fail_while_reading=False):
    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        if fail:
            raise fail

        def rows_iter():
            yield from rows
            if fail_while_reading:
                raise ConnectionError("connection reset")

        return rows_iter()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hf_streams_through_datasets(monkeypatch):
    rows = [{"text": "first"}, {"text": None}, {"other": "x"}, {"text": "second"}]
    calls = fake_datasets(monkeypatch, rows)
    stats = ReadStats()
    spec = parse_source("hf:org/data:validation?config=small&revision=abc")
    assert list(iter_documents(spec, stats)) == ["first", "second"]
    assert calls == [("org/data", {"split": "validation", "streaming": True, "name": "small", "revision": "abc"})]
    assert stats.bad_records == 2
    calls.clear()
    list(iter_documents(parse_source("hf:org/data")))
    assert calls == [("org/data", {"split": "train", "streaming": True})]


def test_hf_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="pip install datasets"):
        iter_documents(parse_source("hf:org/data"))
    fake_datasets(monkeypatch, fail=ConnectionError("Couldn't reach the Hub\nmore lines"))
    with pytest.raises(UserError, match="cannot load Hugging Face dataset.*Couldn't reach the Hub"):
        iter_documents(parse_source("hf:org/data"))
    fake_datasets(monkeypatch, rows=[{"text": "a"}], fail_while_reading=True)
    with pytest.raises(UserError, match="lost the Hugging Face dataset"):
        list(iter_documents(parse_source("hf:org/data")))
    fake_datasets(monkeypatch, rows=[{"body": "a"}])
    with pytest.raises(UserError, match="has no text"):
        list(iter_documents(parse_source("hf:org/data")))
    with pytest.raises(UserError, match="split given twice"):
        iter_documents(parse_source("hf:org/data:train?split=test"))


def test_fingerprint_of_hf_is_its_parameters():
    a = input_fingerprint(parse_source("hf:org/data:train"))
    assert a == input_fingerprint(parse_source("hf:org/data:train"))
    assert a != input_fingerprint(parse_source("hf:org/data:train?revision=v2"))
