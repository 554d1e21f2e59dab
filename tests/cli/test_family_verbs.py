"""Encoders and encoder-decoders from the command line (issue 4): train, eval, fill-mask,
generate, and the bad inputs that belong to objectives."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tests.cli.cli_run import run

TINY = ["--train.max_steps", "3", "--data.vocab_size", "400", "--data.seq_len", "32", "--train.batch_tokens", "256",
        "--train.micro_batch", "8", "--train.eval_every", "100", "--train.eval_tokens", "2048", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"The capital of France is Paris, said reader {i}." for i in range(300)))
    return path




def train_run(capsys, tmp_path, corpus, name, preset, *extra):
    code, out, err = run(capsys, "train", "--data", f"web={corpus}", "--name", name, "--out-dir", tmp_path,
                         "--model.preset", preset, *TINY, *extra)
    assert code == 0, err
    return tmp_path / name


def test_encoder_train_eval_fill_mask(tmp_path, corpus, capsys):
    run_dir = train_run(capsys, tmp_path, corpus, "bert", "tiny-bert")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["measured"]["objective"] == "mlm"
    code, out, err = run(capsys, "eval", run_dir, "--json")
    assert code == 0, err
    web = json.loads(out)["web"]
    assert web["accuracy"] is not None and web["bits_per_byte"] is None
    code, out, err = run(capsys, "fill-mask", run_dir, "The capital of France is <mask>.", "--top-k", "3", "--json")
    assert code == 0, err
    candidates = json.loads(out)
    assert len(candidates) == 1 and len(candidates[0]) == 3
    assert sum(c["probability"] for c in candidates[0]) <= 1.0 + 1e-6


@pytest.mark.parametrize("preset, objective", [("tiny-t5", "span"), ("tiny-bart", "infill")])
def test_encoder_decoder_train_and_generate(tmp_path, corpus, capsys, preset, objective):
    run_dir = train_run(capsys, tmp_path, corpus, preset, preset)
    assert json.loads((run_dir / "report.json").read_text())["measured"]["objective"] == objective
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The capital of <|sentinel_0|>", "--max-new-tokens",
                         "5", "--temperature", "0", "--json")
    assert code == 0, err
    output = json.loads(out)[0]
    assert len(output["ids"]) <= 5
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The capital of <|sentinel_0|>", "--max-new-tokens",
                         "5", "--num-beams", "3", "--num-samples", "3", "--json")
    assert code == 0, err
    beams = json.loads(out)
    assert len(beams) == 3 and [b["sample"] for b in beams] == [0, 1, 2]
    assert beams[0]["score"] >= beams[1]["score"] >= beams[2]["score"]
    assert all(len(b["ids"]) <= 5 and b["finish_reason"] in ("eos", "length") for b in beams)


def gpt2_like_tokenizer(path):
    """A byte-level BPE whose only special token is <|endoftext|>: no mask, no sentinels."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world"] * 10, trainer)
    tok.save(str(path))
    return path


@pytest.mark.parametrize("preset, needle", [("tiny-bert", "needs a mask token"), ("tiny-t5", "needs sentinel tokens"),
                                            ("tiny-bart", "needs a mask token")])
def test_tokenizer_without_the_needed_special_tokens(tmp_path, corpus, capsys, preset, needle):
    tokenizer = gpt2_like_tokenizer(tmp_path / "gpt2.json")
    code, _, err = run(capsys, "train", "--data", corpus, "--name", "bad", "--out-dir", tmp_path, *TINY,
                       "--model.preset", preset, "--data.tokenizer", tokenizer)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "bad").exists()


def test_bad_inputs_for_the_families(tmp_path, corpus, capsys):
    code, _, err = run(capsys, "train", "--data", corpus, "--name", "bad", "--out-dir", tmp_path, *TINY,
                       "--model.preset", "tiny-bert", "--objective.name", "causal")
    assert code == 2 and "does not fit the model family" in err and "use objective.name mlm" in err
    code, _, err = run(capsys, "train", "--data", corpus, "--name", "bad", "--out-dir", tmp_path, *TINY,
                       "--model.preset", "tiny-t5", "--data.seq_len", "512", "--train.batch_tokens", "4096")
    assert code == 2 and "longer than the model's context" in err
    decoder = train_run(capsys, tmp_path, corpus, "gpt", "tiny-gpt2")
    code, _, err = run(capsys, "fill-mask", decoder, "The capital is <mask>.")
    assert code == 2 and "needs an encoder" in err
    encoder = train_run(capsys, tmp_path, corpus, "enc", "tiny-bert")
    code, _, err = run(capsys, "fill-mask", encoder, "no mask here")
    assert code == 2 and "has no <mask>" in err
    code, _, err = run(capsys, "fill-mask", encoder, "word " * 400 + "<mask>")
    assert code == 2 and "longer than the model's context" in err
    code, _, err = run(capsys, "generate", encoder, "--prompt", "hello")
    assert code == 2 and "does not generate" in err
    assert "lmforge fill-mask" in err
    code, _, err = run(capsys, "generate", decoder, "--prompt", "hello", "--num-beams", "2", "--slide-window")
    assert code == 2 and "beam search does not slide the window" in err


def test_marks_become_special_tokens():
    """<mask> and <|sentinel_N|> in an encoder-decoder's input are the special tokens, not text."""
    from lmforge.data.tokenizer import train_tokenizer
    from lmforge.generate.fill_mask import encode_with_marks

    tok = train_tokenizer(["the capital of France is Paris"] * 20, 400)
    ids = encode_with_marks(tok, "the capital of <|sentinel_0|> is <mask>.")
    assert tok.sentinel_ids[0] in ids and tok.mask_id in ids
    assert tok.sentinel_ids[0] not in tok.encode("the capital of <|sentinel_0|>")


def test_generate_from_a_run_without_weights(tmp_path, corpus, capsys):
    """A run directory whose weights are gone -> one-line error, exit 2."""
    import shutil

    run_dir = train_run(capsys, tmp_path, corpus, "gone", "tiny-gpt2")
    (run_dir / "model.safetensors").unlink()
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "latest").unlink()
    code, _, err = run(capsys, "generate", run_dir, "--prompt", "hello")
    assert code == 2 and err.count("\n") == 1 and "has no weights" in err, err
