"""The pretraining verbs from the command line: a real tiny run, and every bad input as a
one-line error with exit code 2 that leaves nothing half-written."""

from __future__ import annotations

import json

import pytest

from tests.cli.cli_run import run

TINY = ["--train.max_steps", "2", "--data.vocab_size", "360", "--data.seq_len", "32", "--train.batch_tokens", "256",
        "--train.micro_batch", "8", "--train.eval_every", "100", "--train.eval_tokens", "2048", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    text = "\n\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog {i} times." for i in range(300))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path




def test_tokenizer_prepare_train_eval(tmp_path, corpus, capsys):
    tok = tmp_path / "tok.json"
    code, out, err = run(capsys, "tokenizer", "train", "--data", corpus, "--vocab-size", 400, "--out", tok, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["vocab_size"] == 400 and info["bytes_per_token"] > 1
    code, out, err = run(capsys, "prepare", "--data", f"web={corpus}", "--tokenizer", tok, "--out", tmp_path / "d",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["sources"][0]["name"] == "web"
    code, out, err = run(capsys, "train", "--data", f"web={corpus}", "--name", "r", "--out-dir", tmp_path, *TINY)
    assert code == 0, err
    assert "bits per byte" in out
    code, out, err = run(capsys, "train", "--data", f"web={corpus}", "--name", "r2", "--out-dir", tmp_path, *TINY,
                         "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 2  # stdout holds only the JSON
    code, out, err = run(capsys, "eval", tmp_path / "r", "--json")
    assert code == 0, err
    assert json.loads(out)["web"]["tokens"] > 0
    code, out, err = run(capsys, "eval", tmp_path / "r", "--data", f"held={corpus}", "--max-tokens", 500, "--json")
    assert code == 0, err
    assert json.loads(out)["held"]["tokens"] == 500


def test_mixture_sources_and_tokens_auto(tmp_path, corpus, capsys):
    other = tmp_path / "other.txt"
    other.write_text("\n\n".join(f"Another text, number {i}, about cats and hats." for i in range(300)))
    code, _, err = run(capsys, "train", "--data", f"a={corpus}:0.7", f"b={other}:0.3", "--name", "mix",
                       "--out-dir", tmp_path, *TINY)
    assert code == 0, err
    report = json.loads((tmp_path / "mix" / "report.json").read_text())
    assert set(report["measured"]["validation"]) == {"a", "b", "all"}


def _bad_binary(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 400)
    return path


BAD = [
    (lambda p, c: ["train", "--data", p / "missing.txt"], "no such file or folder"),
    (lambda p, c: ["train", "--data", (p / "empty.txt", (p / "empty.txt").write_text(""))[0]], "no text"),
    (lambda p, c: ["train", "--data", _bad_binary(p)], "no text"),
    (lambda p, c: ["train", "--data", c, "--data.vocab_size", "100"], "--data.vocab_size must be at least 360"),
    (lambda p, c: ["train", "--data", c, "--data.seq_len", "512", "--train.batch_tokens", "4096"],
     "longer than the model's context"),
    (lambda p, c: ["train", "--data", c, "--model.vocab_size", "1000"], "vocabulary sizes differ"),
    (lambda p, c: ["train", "--data", f"a={c}:-0.5"], "weight"),
    (lambda p, c: ["train", "--data", f"a={c}:0", f"b={c}:0"], "weight"),
    (lambda p, c: ["train", "--data", c, "--train.lrr", "1"], "did you mean train.lr"),
    (lambda p, c: ["train", "--data", c, "--model.preset", "gpt5"], "unknown model preset"),
    (lambda p, c: ["train", "--data", c, "--train.lr", "fast"], "must be a number"),
    (lambda p, c: ["train", "--resume", p / "nothing"], "the run directory to resume has no config.yaml"),
    # issue 12: every numeric key in its range, before anything is built or written
    *[(lambda p, c, k=key, v=value: ["train", "--data", c, f"--{k}", v], f"--{key} must be {must}")
      for key, value, must in [
          ("train.micro_batch", "0", "greater than zero"), ("data.seq_len", "0", "greater than zero"),
          ("train.ckpt_every", "0", "greater than zero"), ("train.log_every", "0", "greater than zero"),
          ("train.max_steps", "0", "greater than zero"), ("train.lr", "-1", "greater than zero"),
          ("train.lr", "nan", "greater than zero"), ("train.lr", "0", "greater than zero"),
          ("train.beta1", "1.5", "in [0, 1)"), ("train.max_time", "-1", "greater than zero"),
          ("train.stop_at_step", "-1", "greater than zero"), ("train.keep_last", "0", "greater than zero"),
          ("train.warmup_steps", "-1", "at least 0"), ("train.weight_decay", "-0.1", "at least 0"),
          ("data.max_epochs", "0", "greater than zero"), ("train.eval_tokens", "0", "greater than zero"),
          ("train.eval_every", "0", "greater than zero"), ("objective.mask_rate", "1.5", "in (0, 1]"),
          ("data.val_fraction", "1", "in [0, 1)"), ("train.expected_mfu", "40", "in (0, 1]"),
      ]],
    (lambda p, c: ["train", "--data", c, "--tokens", "-5"], "cannot read --tokens as a number"),
    (lambda p, c: ["train", "--data", c, "--name", "../escape"], "--name must be a plain name"),
    (lambda p, c: ["train", "--data", c, "--name", ""], "--name is empty"),
    (lambda p, c: ["train", "--data", c, "--out-dir", (p / "afile", (p / "afile").write_text("x"))[0]],
     "names a file, not a directory"),
    (lambda p, c: ["train", "--resume", p / "a", "--init-from", p / "b"], "--resume and --init-from do not go"),
    (lambda p, c: ["eval", p / "nothing"], "run directory not found"),
    (lambda p, c: ["tokenizer", "train", "--data", c, "--vocab-size", "100"], "vocab size too small"),
    (lambda p, c: ["prepare", "--data", c, "--tokenizer", p / "nope.json"], "no tokenizer file"),
    (lambda p, c: ["tokenizer", "train", "--data", c, "--sample-bytes", "0", "--out", p / "t.json"],
     "--sample-bytes must be positive"),
    (lambda p, c: ["tokenizer", "train", "--data", c, "--vocab-size", "400", "--out",
                   (p / "adir", (p / "adir").mkdir())[0]], "the tokenizer path is a directory"),
    (lambda p, c: ["prepare", "--data", c, "--tokenizer", p / "nope.json", "--out", ""], "--out is empty"),
    (lambda p, c: ["plan", "--flops", "1e18", "--emit-config", (p / "bdir", (p / "bdir").mkdir())[0]],
     "Is a directory (EISDIR)"),
]


@pytest.mark.parametrize("make_argv, needle", BAD, ids=[f"{i}-{needle}" for i, (_, needle) in enumerate(BAD)])
def test_bad_input_one_line_exit_2_nothing_left(tmp_path, corpus, capsys, make_argv, needle):
    before = set(tmp_path.iterdir())
    argv = make_argv(tmp_path, corpus)
    if argv[0] == "train" and "--resume" not in argv:
        argv = [argv[0], "--name", "bad", "--out-dir", tmp_path, *TINY, *argv[1:]]  # the case's values win
    made = {p for p in tmp_path.iterdir() if p not in before}  # the inputs a case writes (a file for --out-dir)
    before |= made
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert out == "", out  # the error is the only line: no preamble before it
    assert not (tmp_path / "bad").exists()
    assert {p for p in tmp_path.iterdir() if p not in before and p.suffix not in (".txt", ".bin")} == set()


def test_corrupt_shard_is_refused(tmp_path, corpus, capsys):
    code, _, err = run(capsys, "train", "--data", f"web={corpus}", "--name", "r", "--out-dir", tmp_path, *TINY)
    assert code == 0, err
    shard = next((tmp_path / "r" / "data").glob("web.val.*.bin"))
    shard.write_bytes(shard.read_bytes()[:-2])
    code, _, err = run(capsys, "eval", tmp_path / "r")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_invalid_utf8_is_replaced_and_counted_not_a_crash(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("\n\n".join(f"caf\xe9 number {i} is open" for i in range(300)).encode("latin-1"))
    code, _, err = run(capsys, "train", "--data", f"cafe={path}", "--name", "r", "--out-dir", tmp_path, *TINY)
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "data" / "manifest.json").read_text())
    assert manifest["sources"][0]["read_stats"]["replaced_chars"] == 300
