"""Token shards: prepare (split, dtype, idempotence, atomicity) and open_shards (refusals)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lmforge.data import shards
from lmforge.data.manifest import MANIFEST_NAME
from lmforge.data.mixture import Mixture
from lmforge.data.shards import TokenView, open_shards, prepare, split_of
from lmforge.errors import UserError
from lmforge.fileio import remove_stale_temp_files
from tests.corpora import corpus

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Spec:  # the fields of lmforge.data.sources.SourceSpec that shards use
    name: str
    location: str
    weight: float = 1.0
    field: str = "text"


class CharTokenizer:
    """One token per character, ids offset by ``base`` (to reach past 65535), eos = vocab_size - 1."""

    def __init__(self, vocab_size: int = 300, base: int = 0, tag: str = "a"):
        self.vocab_size, self.base, self.eos_id = vocab_size, base, vocab_size - 1
        self.sha256 = hashlib.sha256(f"char{vocab_size}{base}{tag}".encode()).hexdigest()
        self.calls = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.calls += 1
        return [[self.base + (ord(c) % 250) for c in t] for t in texts]


def _read_txt(spec) -> list[str]:
    text = Path(spec.location).read_text(encoding="utf-8")
    return [d.strip() for d in text.split("\n\n")]  # empty strings kept: prepare skips and counts them


def _fingerprint(spec) -> str:
    return hashlib.sha256(Path(spec.location).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def fake_sources(monkeypatch):
    """Read .txt files as blank-line-separated documents, without lmforge.data.sources."""
    monkeypatch.setattr(shards, "_source_api", lambda: (lambda spec: (_read_txt(spec), None), _fingerprint))


def _corpus(path: Path, n_docs: int, tag: str = "doc") -> Spec:
    rng = np.random.default_rng(len(tag) + n_docs)
    letters = list("abcdefgh ")
    docs = [f"{tag} {i} " + "".join(rng.choice(letters, size=int(rng.integers(5, 60)))) for i in range(n_docs)]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return Spec(path.stem, str(path))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _documents(tokens: np.ndarray, eos: int) -> list[list[int]]:
    ends = np.nonzero(tokens == eos)[0]
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends, strict=True)]


def test_prepare_writes_every_document_once_with_eos(tmp_path):
    spec = _corpus(tmp_path / "alpha.txt", 300)
    tok = CharTokenizer()
    out = tmp_path / "shards"
    m = prepare([spec], tok, out, val_fraction=0.1, seed=1, batch_size=64)
    store = open_shards(out, tok, verify=True)
    expected = [tok.encode_batch([d])[0] for d in _read_txt(spec)]
    train, val = store.tokens("alpha", "train"), store.tokens("alpha", "val")
    assert train.dtype == np.uint16 and m.dtype == "uint16"
    got = _documents(np.asarray(train), tok.eos_id) + _documents(np.asarray(val), tok.eos_id)
    assert sorted(got) == sorted(expected)  # every document exactly once, each ending with eos
    entry = m.source("alpha")
    assert entry.documents == 300 and entry.train.documents + entry.val.documents == 300
    assert entry.train.tokens == len(train) and entry.val.tokens == len(val)
    assert 10 <= entry.val.documents <= 55  # ~ 0.1 * 300
    # the split follows the documented hash rule, document by document, in order
    want_val = [d for i, d in enumerate(expected) if split_of(1, "alpha", i, 0.1) == "val"]
    assert _documents(np.asarray(val), tok.eos_id) == want_val
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert data["tokenizer_sha256"] == tok.sha256 and data["vocab_size"] == 300 and data["seed"] == 1
    shard = data["sources"][0]["train"]["shards"][0]
    assert shard["file"] == "alpha.train.000.bin"
    assert shard["sha256"] == hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temp files left
    report = m.to_dict()["sources"][0]
    assert (report["train_tokens"], report["val_tokens"]) == (entry.train_tokens, entry.val_tokens)
    assert report["train_documents"] + report["val_documents"] == 300 and m.to_dict()["reused"] is False


def test_uint32_for_big_vocab(tmp_path):
    spec = _corpus(tmp_path / "big.txt", 20)
    tok = CharTokenizer(vocab_size=70_000, base=65_500)
    m = prepare([spec], tok, tmp_path / "out")
    store = open_shards(tmp_path / "out", tok)
    train = store.tokens("big", "train")
    assert m.dtype == "uint32" and train.dtype == np.uint32
    assert int(np.max(train)) == 69_999 and int(np.min(train)) >= 65_500  # nothing wrapped around
    assert (tmp_path / "out" / "big.train.000.bin").stat().st_size == 4 * m.source("big").train.tokens


def test_split_is_deterministic_and_seeded(tmp_path):
    spec = _corpus(tmp_path / "s.txt", 200)
    tok = CharTokenizer()
    prepare([spec], tok, tmp_path / "a", seed=5, val_fraction=0.2)
    prepare([spec], tok, tmp_path / "b", seed=5, val_fraction=0.2, batch_size=7)  # batching does not matter
    prepare([spec], tok, tmp_path / "c", seed=6, val_fraction=0.2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a")["s.val.000.bin"] != _files(tmp_path / "c")["s.val.000.bin"]


@pytest.mark.parametrize("seed", range(8))
def test_two_documents_give_one_train_one_val(tmp_path, seed):
    path = tmp_path / "two.txt"
    path.write_text("first document\n\nsecond document", encoding="utf-8")
    m = prepare([Spec("two", str(path))], CharTokenizer(), tmp_path / "out", seed=seed, val_fraction=0.01)
    assert (m.source("two").train.documents, m.source("two").val.documents) == (1, 1)


def test_single_document_goes_to_train_and_empty_documents_are_counted(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("\n\nonly one\n\n\n\n", encoding="utf-8")
    tok = CharTokenizer()
    m = prepare([Spec("one", str(path))], tok, tmp_path / "out", val_fraction=0.5)
    e = m.source("one")
    assert (e.documents, e.skipped_documents, e.train.documents, e.val.tokens) == (1, 3, 1, 0)
    store = open_shards(tmp_path / "out")
    assert len(store.tokens("one", "val")) == 0 and store.tokens("one", "train")[-1] == tok.eos_id


def test_rerun_with_unchanged_inputs_does_nothing(tmp_path):
    spec = _corpus(tmp_path / "s.txt", 50)
    tok = CharTokenizer()
    out = tmp_path / "out"
    first = prepare([spec], tok, out)
    def stamps() -> dict[str, int]:  # every file but the lock, which records each owner's pid
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}

    before = stamps()
    calls, messages = tok.calls, []
    again = prepare([spec], tok, out, log=messages.append)
    assert again.reused and not first.reused and again == first
    assert tok.calls == calls  # not tokenized again
    assert stamps() == before
    assert "nothing to do" in messages[0]


def test_changed_input_or_tokenizer_is_refused_unless_forced(tmp_path):
    spec = _corpus(tmp_path / "s.txt", 50)
    out = tmp_path / "out"
    prepare([spec], CharTokenizer(), out)
    with pytest.raises(UserError, match="tokenizer changed.*--force"):
        prepare([spec], CharTokenizer(tag="other"), out)
    with pytest.raises(UserError, match="seed changed"):
        prepare([spec], CharTokenizer(), out, seed=1)
    Path(spec.location).write_text("new text\n\nand more", encoding="utf-8")
    with pytest.raises(UserError, match="input of source 's' changed"):
        prepare([spec], CharTokenizer(), out)
    with pytest.raises(UserError, match="another tokenizer"):
        open_shards(out, CharTokenizer(tag="other"))
    m = prepare([spec], CharTokenizer(), out, force=True)
    assert m.source("s").documents == 2 and not m.reused
    assert prepare([spec], CharTokenizer(), out).reused


def test_force_with_fewer_shards_removes_the_old_ones(tmp_path):
    a, b = _corpus(tmp_path / "a.txt", 40, "x"), _corpus(tmp_path / "b.txt", 40, "y")
    out = tmp_path / "out"
    prepare([a, b], CharTokenizer(), out, shard_tokens=500)
    prepare([a], CharTokenizer(), out, shard_tokens=500, force=True)
    assert not [p for p in out.iterdir() if p.name.startswith("b.")]
    assert open_shards(out, verify=True).sources == ["a"]


def test_truncated_missing_or_corrupt_shard_is_refused(tmp_path):
    out = tmp_path / "out"
    prepare([_corpus(tmp_path / "s.txt", 80)], CharTokenizer(), out)
    shard = out / "s.train.000.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    with pytest.raises(UserError, match="truncated or corrupt.*--force"):
        open_shards(out)
    shard.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])  # same size, one bit flipped
    open_shards(out)  # the cheap check only looks at sizes
    with pytest.raises(UserError, match="sha256 mismatch"):
        open_shards(out, verify=True)
    shard.unlink()
    with pytest.raises(UserError, match="missing"):
        open_shards(out)
    assert not prepare([_corpus(tmp_path / "s.txt", 80)], CharTokenizer(), out).reused  # rebuilt, same inputs
    open_shards(out, verify=True)


def test_missing_or_corrupt_manifest_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such shard directory"):
        open_shards(tmp_path / "nope")
    with pytest.raises(UserError, match="no manifest.json"):
        open_shards(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="corrupt manifest"):
        open_shards(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "lmforge-shards", "version": 99}))
    with pytest.raises(UserError, match="version 99"):
        open_shards(tmp_path)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"seed": -1}, "seed"),
        ({"shard_tokens": 0}, "shard_tokens"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        prepare([_corpus(tmp_path / "s.txt", 5)], CharTokenizer(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    s = _corpus(tmp_path / "s.txt", 5)
    with pytest.raises(UserError, match="share a name"):
        prepare([s, s], CharTokenizer(), tmp_path / "out")
    with pytest.raises(UserError, match="no sources"):
        prepare([], CharTokenizer(), tmp_path / "out")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no documents"):
        prepare([s, Spec("empty", str(empty))], CharTokenizer(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        prepare([s], CharTokenizer(), tmp_path / "file")


class Boom(RuntimeError):
    pass


def test_failure_midway_leaves_nothing_half_written(tmp_path, monkeypatch):
    a, b = _corpus(tmp_path / "a.txt", 100, "x"), _corpus(tmp_path / "b.txt", 100, "y")
    out = tmp_path / "out"
    tok = CharTokenizer()
    real = tok.encode_batch

    def failing(texts):
        if tok.calls >= 6:  # source a done (4 batches), source b two batches in
            raise Boom("disk on fire")
        return real(texts)

    monkeypatch.setattr(tok, "encode_batch", failing)
    with pytest.raises(Boom):
        prepare([a, b], tok, out, batch_size=30, shard_tokens=400)
    assert not out.exists()  # it did not exist before: nothing at all is left

    monkeypatch.setattr(tok, "encode_batch", real)
    prepare([a], tok, out)  # a good state, then a forced rebuild that fails
    before = _files(out)
    monkeypatch.setattr(tok, "encode_batch", failing)
    tok.calls = 0
    with pytest.raises(Boom):
        prepare([a, b], tok, out, batch_size=30, shard_tokens=400, force=True)
    assert _files(out) == before  # the previous manifest and shards are untouched, no temp files
    open_shards(out, verify=True)


def test_killed_prepare_leaves_no_manifest_and_is_cleaned_up(tmp_path):
    """SIGKILL during tokenization: no manifest (open refuses), and the next prepare removes the temp dir."""
    spec = _corpus(tmp_path / "s.txt", 200)
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import hashlib, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from lmforge.data import shards
        from tests.data.test_shards import CharTokenizer, Spec, _fingerprint, _read_txt

        def slow(spec):
            for i, d in enumerate(_read_txt(spec)):
                if i == 50:
                    print("started", flush=True)
                    time.sleep(60)
                yield d

        shards._source_api = lambda: (lambda spec: (slow(spec), None), _fingerprint)
        shards.prepare([Spec("s", {spec.location!r})], CharTokenizer(), Path({str(out)!r}), batch_size=10)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "started"
    finally:
        proc.kill()
        proc.wait()
    assert not (out / MANIFEST_NAME).exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-prepare-")]  # the dead run's temp dir
    with pytest.raises(UserError, match="no manifest"):
        open_shards(out)
    prepare([spec], CharTokenizer(), out)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # the lock file stays
    open_shards(out, verify=True)


def test_many_shards_view_and_mixture_across_boundaries(tmp_path):
    spec = _corpus(tmp_path / "s.txt", 200)
    tok = CharTokenizer()
    m = prepare([spec], tok, tmp_path / "one", val_fraction=0.1)
    mm = prepare([spec], tok, tmp_path / "many", val_fraction=0.1, shard_tokens=333)
    assert len(mm.source("s").train.shards) > 5 and all(s.tokens <= 333 for s in mm.source("s").train.shards)
    one, many = open_shards(tmp_path / "one", verify=True), open_shards(tmp_path / "many", verify=True)
    flat, view = one.tokens("s", "train"), many.tokens("s", "train")
    assert isinstance(view, TokenView) and len(view) == len(flat) == m.source("s").train.tokens
    assert np.array_equal(np.asarray(view), flat)
    for lo, hi in [(0, 1), (330, 340), (0, len(flat)), (332, 333), (333, 666), (-5, None), (100, 50)]:
        assert np.array_equal(view[lo:hi], flat[lo:hi])
    assert view[333] == flat[333] and view[-1] == flat[-1]
    a = Mixture(one, {"s": 1.0}, seq_len=64, seed=0).batch(3, 16)
    b = Mixture(many, {"s": 1.0}, seq_len=64, seed=0).batch(3, 16)
    assert np.array_equal(a[0], b[0])


def test_end_to_end_with_real_tokenizer_and_sources(tmp_path, monkeypatch):
    """The real Tokenizer and .txt reader: prepare, re-run, mismatch, check_inputs, then a mixture."""
    tokenizer_mod = pytest.importorskip("lmforge.data.tokenizer")
    sources_mod = pytest.importorskip("lmforge.data.sources")
    monkeypatch.undo()  # the real lmforge.data.sources reader instead of the autouse fake
    texts = {
        "finance": ["The committee voted to raise the federal funds rate by a quarter point."] * 3,
        "general": ["Once upon a time a small cat lived in a quiet village by the sea."] * 3,
    }
    specs = []
    for name, base in texts.items():
        docs = [
            f"{b} Paragraph {i} of {name}: {' '.join(name for _ in range(i % 7))}." for i, b in enumerate(base * 40)
        ]
        path = tmp_path / f"{name}.txt"
        path.write_text("\n\n".join(docs), encoding="utf-8")
        specs.append(sources_mod.parse_source(f"{name}={path}:0.5"))
    corpus = [p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("*.txt"))]
    tok = tokenizer_mod.train_tokenizer(corpus, vocab_size=400, n_sentinels=4)
    out = tmp_path / "shards"
    m = prepare(specs, tok, out, val_fraction=0.1)
    assert m.dtype == "uint16" and [s.name for s in m.sources] == ["finance", "general"]
    assert prepare(specs, tok, out, val_fraction=0.1).reused
    store = open_shards(out, tok, verify=True, check_inputs=True)
    for name in texts:
        train = np.asarray(store.tokens(name, "train"))
        assert train[-1] == tok.eos_id and (train == tok.eos_id).sum() == m.source(name).train.documents
        first = _documents(train, tok.eos_id)[0]
        assert tok.decode(first).startswith(texts[name][0][:20])
    mix = Mixture(store, {"finance": 0.51, "general": 0.49}, seq_len=32, seed=0)
    x, src = mix.batch(0, 8)
    assert x.shape == (8, 33) and x.dtype == np.int64 and set(src.tolist()) <= {0, 1}
    with (tmp_path / "general.txt").open("a", encoding="utf-8") as f:
        f.write("\n\nOne more document.")
    with pytest.raises(UserError, match="input of source 'general' changed"):
        open_shards(out, tok, check_inputs=True)
    with pytest.raises(UserError, match="input of source 'general' changed.*--force"):
        prepare(specs, tok, out, val_fraction=0.1)


def test_temp_dir_of_a_live_process_is_kept(tmp_path):
    live = tmp_path / f".tmp-prepare-{os.getppid()}"
    dead = tmp_path / ".tmp-prepare-999999999"
    live.mkdir()
    dead.mkdir()
    remove_stale_temp_files(tmp_path)  # what prepare calls first
    assert live.exists() and not dead.exists()


def test_split_rule_fraction_and_batches_cut_by_size():
    vals = sum(split_of(3, "src", i, 0.05) == "val" for i in range(20_000))
    assert abs(vals - 1000) < 3 * (20_000 * 0.05 * 0.95) ** 0.5  # binomial, 3 sigma
    assert split_of(3, "src", 7, 0.05) == split_of(3, "src", 7, 0.05)
    sizes = [len(b) for b in shards._batches(["x" * 10] * 25, 10, max_chars=35)]
    assert sizes == [4, 4, 4, 4, 4, 4, 1]
    assert [len(b) for b in shards._batches(["x"] * 25, 10)] == [10, 10, 5]


def test_reader_stats_are_recorded(tmp_path, monkeypatch):
    """Non-UTF-8 bytes are replaced by the real reader, counted, and the count lands in the manifest."""
    sources_mod = pytest.importorskip("lmforge.data.sources")
    monkeypatch.undo()
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text here\n\nbad \xff\xfe bytes\n\nmore good text")
    messages: list[str] = []
    m = prepare([sources_mod.parse_source(f"bad={path}")], CharTokenizer(), tmp_path / "out", log=messages.append)
    assert m.source("bad").documents == 3 and m.source("bad").read_stats["replaced_chars"] == 2
    assert "2 replaced chars" in messages[0]
    reopened = open_shards(tmp_path / "out", check_inputs=True).manifest
    assert reopened.source("bad").read_stats == m.source("bad").read_stats


@pytest.mark.slow
def test_real_corpora_prepare_and_mix(tmp_path, monkeypatch):
    """Two shared corpora (FOMC minutes, Shakespeare) through the real tokenizer, then a 0.51/0.49 mixture."""
    corpora = corpus("tinyshakespeare.txt").parent
    tokenizer_mod = pytest.importorskip("lmforge.data.tokenizer")
    sources_mod = pytest.importorskip("lmforge.data.sources")
    monkeypatch.undo()
    specs = [
        sources_mod.parse_source(f"finance={corpora / 'fomc_minutes_1993_2020_train.txt'}:0.51"),
        sources_mod.parse_source(f"general={corpora / 'tinyshakespeare.txt'}:0.49"),
    ]
    tok = tokenizer_mod.train_tokenizer([(corpora / "tinyshakespeare.txt").read_text(encoding="utf-8")], 4096)
    m = prepare(specs, tok, tmp_path / "out")
    store = open_shards(tmp_path / "out", tok, verify=True, check_inputs=True)
    assert all(m.source(s.name).val.documents >= 1 for s in specs)
    mix = Mixture(store, {s.name: s.weight for s in specs}, seq_len=256, seed=0)
    src = np.concatenate([mix.batch(step, 32)[1] for step in range(300)])
    assert abs((src == 0).mean() - 0.51) < 0.01


def test_failure_while_moving_shards_never_leaves_a_wrong_manifest(tmp_path, monkeypatch):
    """A crash between the shard renames and the manifest write: no manifest describes files it does not match."""
    path = tmp_path / "s.txt"
    text = "\n\n".join(f"doc {i} " + "a" * (i % 50) for i in range(200))
    path.write_text(text, encoding="utf-8")
    spec, out = Spec("s", str(path)), tmp_path / "out"
    prepare([spec], CharTokenizer(), out, shard_tokens=500)
    path.write_text(text.replace("a", "b"), encoding="utf-8")  # same token counts, other tokens
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut")
        return real(src, dst)

    monkeypatch.setattr(shards.os, "replace", flaky)
    with pytest.raises(OSError, match="power cut"):
        prepare([spec], CharTokenizer(), out, shard_tokens=500, force=True)
    monkeypatch.setattr(shards.os, "replace", real)
    if (out / MANIFEST_NAME).exists():
        open_shards(out, verify=True)  # whatever manifest is there matches its shards
    else:
        with pytest.raises(UserError, match="no manifest"):
            open_shards(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # the lock file stays
    prepare([spec], CharTokenizer(), out, shard_tokens=500, force=True)
    open_shards(out, verify=True)


def test_a_shard_directory_in_use_is_refused_with_the_owners_pid(tmp_path):
    """Two prepares into one --out: the second is refused while the first holds it (a lock
    held through another open file is a different owner, as another process would be)."""
    import os

    from lmforge.dirlock import DirectoryLock

    spec = _corpus(tmp_path / "s.txt", 20)
    out = tmp_path / "out"
    holder = DirectoryLock(out, "shard directory").acquire()
    try:
        with pytest.raises(UserError, match=rf"shard directory is in use by another lmforge.*pid {os.getpid()}"):
            prepare([spec], CharTokenizer(), out)
    finally:
        holder.release()
    assert prepare([spec], CharTokenizer(), out).sources[0].documents == 20
