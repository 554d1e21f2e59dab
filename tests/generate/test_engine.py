"""The generation engine and the generate verb: batching with left padding equals one
prompt alone, seeds, stop strings, max_new_tokens 0, streaming, log-probabilities, and the
one-line errors of bad settings."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from lmforge.api import generate as api_generate
from lmforge.cli.main import main
from lmforge.data.tokenizer import train_tokenizer
from lmforge.errors import UserError
from lmforge.generate.config import GenerateConfig
from lmforge.generate.engine import generate
from lmforge.models import build_model
from lmforge.plan.presets import get_preset
from tests.cli.cli_run import run

TEXTS = ["the cat sat on the mat, said the reader."] * 40
PROMPTS = ["the cat sat on", "the", "mat, said"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 400)


@pytest.fixture(scope="module")
def model(tok):
    spec = get_preset("tiny-llama").spec.with_(n_decoder_layers=2, d_model=64, d_ff=128, vocab_size=tok.vocab_size,
                                                context=24)
    torch.manual_seed(0)
    m = build_model(spec).double()  # float64: batched and alone agree to the last bit in practice
    with torch.no_grad():
        m.lm_head.weight.mul_(40)  # sharp, so greedy ties are not an issue
    return m


def test_batched_left_padding_equals_each_prompt_alone(model, tok):
    for config in (GenerateConfig(temperature=0, max_new_tokens=8), GenerateConfig(max_new_tokens=8, seed=5)):
        batch = generate(model, tok, PROMPTS, config)
        for prompt, result in zip(PROMPTS, batch, strict=True):
            alone = generate(model, tok, [prompt], config)[0]
            assert result.ids == alone.ids and result.text == alone.text
            assert result.logprobs == pytest.approx(alone.logprobs, abs=1e-9)


def test_seed_samples_and_logprobs(model, tok):
    config = GenerateConfig(max_new_tokens=8, seed=3, num_samples=2, temperature=1.5, top_k=0)
    first, second = (generate(model, tok, ["the"], config) for _ in range(2))
    assert [r.ids for r in first] == [r.ids for r in second]
    assert [r.sample for r in first] == [0, 1]
    assert first[1].ids == generate(model, tok, ["the"], config.replace(seed=4, num_samples=1))[0].ids
    assert all(lp <= 0 for r in first for lp in r.logprobs) and len(first[0].logprobs) == len(first[0].ids)
    greedy = generate(model, tok, ["the"], GenerateConfig(temperature=0, max_new_tokens=4))[0]
    assert greedy.logprobs == [0.0] * len(greedy.ids)  # the filtered distribution keeps only the argmax


def test_stop_string_ends_before_it_and_streaming_matches(model, tok):
    config = GenerateConfig(temperature=0, max_new_tokens=12)
    full = generate(model, tok, ["the"], config)[0]
    clean = [i for i in range(1, len(full.text) - 2) if "\ufffd" not in full.text[i : i + 2]]
    assert clean, full.text
    stop = full.text[clean[len(clean) // 2] : clean[len(clean) // 2] + 2]
    pieces: list[str] = []
    cut = generate(model, tok, ["the"], config.replace(stop=[stop]), on_token=lambda row, p: pieces.append(p))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]
    assert "".join(pieces) == cut.text
    assert cut.text.startswith(tok.decode(cut.ids)) and cut.ids == full.ids[: len(cut.ids)]


def test_zero_new_tokens_and_bad_prompts(model, tok):
    result = generate(model, tok, ["the cat"], GenerateConfig(max_new_tokens=0))[0]
    assert (result.ids, result.text, result.finish_reason) == ([], "", "length")
    with pytest.raises(UserError, match="empty"):
        generate(model, tok, [""], GenerateConfig())
    with pytest.raises(UserError, match="longer than the model's context"):
        generate(model, tok, ["the cat sat on the mat " * 20], GenerateConfig())
    full = generate(model, tok, ["the cat sat on"], GenerateConfig(temperature=0, max_new_tokens=500))[0]
    assert len(tok.encode("the cat sat on")) + len(full.ids) <= 24 + 1 and full.finish_reason in ("context", "eos")
    if full.finish_reason == "context":  # the context of 24 filled before 500 new tokens: said, not silent
        assert len(tok.encode("the cat sat on")) + len(full.ids) == 24 + 1
    exact = 24 + 1 - len(tok.encode("the cat sat on"))  # new tokens that fill the context exactly
    fits = generate(model, tok, ["the cat sat on"], GenerateConfig(temperature=0, max_new_tokens=exact))[0]
    assert fits.finish_reason in ("length", "eos")  # max_new_tokens was reached, not the context


def test_slide_window_goes_on_past_the_context_as_recomputing_the_last_context_tokens(model, tok):
    """Past the context of 24, each token comes from the last 24 ids at positions 0..23 (nanoGPT's
    crop): the reference recomputes that window without a cache. Batched rows equal each alone."""
    config = GenerateConfig(temperature=0, max_new_tokens=40, slide_window=True)
    prompt = tok.encode("the cat sat on")
    out = generate(model, tok, ["the cat sat on"], config)[0]
    ids = list(prompt)
    with torch.no_grad():
        while len(ids) < len(prompt) + 40:
            ids.append(int(model(torch.tensor([ids[-24:]]))[0, -1].argmax()))
    expected = ids[len(prompt):]
    eos = expected.index(tok.eos_id) if tok.eos_id in expected else len(expected)
    assert out.ids == expected[:eos] and len(prompt) + len(out.ids) > 24 + 1  # it did go past the context
    assert out.finish_reason == ("eos" if eos < len(expected) else "length")
    sampled = config.replace(temperature=1.0, seed=2)
    for prompt_text, row in zip(PROMPTS, generate(model, tok, PROMPTS, sampled), strict=True):
        alone = generate(model, tok, [prompt_text], sampled)[0]
        assert row.ids == alone.ids and row.logprobs == pytest.approx(alone.logprobs, abs=1e-9)


def test_beams_are_outputs_with_the_searchs_scores(model, tok):
    from lmforge.generate.beam import beam_hypotheses

    config = GenerateConfig(max_new_tokens=6, num_beams=3, num_samples=3)
    results = generate(model, tok, ["the cat", "mat"], config)
    assert [(r.prompt, r.sample) for r in results] == [(p, k) for p in ("the cat", "mat") for k in range(3)]
    for first in (0, 3):
        hyps = beam_hypotheses(model, results[first].prompt_ids, num_beams=3, max_new_tokens=6, eos_id=tok.eos_id)
        for r, h in zip(results[first:first + 3], hyps, strict=True):
            assert r.ids == h.ids and r.score == pytest.approx(h.score) and r.text == tok.decode(h.ids)
            assert r.finish_reason == ("eos" if h.ended else "length")
            assert r.logprobs == pytest.approx(h.logprobs) and all(lp <= 0 for lp in r.logprobs)
        assert results[first].score >= results[first + 1].score >= results[first + 2].score
    best = results[0]
    pieces: list[str] = []
    stop = best.text[2:4]
    cut = generate(model, tok, ["the cat"], config.replace(num_samples=1, stop=[stop]),
                   on_token=lambda row, p: pieces.append(p))[0]
    assert cut.finish_reason == "stop" and cut.text == best.text[:best.text.find(stop)] == "".join(pieces)
    long = generate(model, tok, ["the cat"], config.replace(max_new_tokens=100, num_samples=1))[0]
    assert long.finish_reason in ("eos", "context") and len(long.prompt_ids) + len(long.ids) <= 24 + 1


def test_api_generate_with_a_model(model, tok):
    out = api_generate(model, "the", tokenizer=tok, temperature=0, max_new_tokens=3)
    assert out[0].ids == generate(model, tok, ["the"], GenerateConfig(temperature=0, max_new_tokens=3))[0].ids


@pytest.mark.parametrize("changes, needle", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                             ({"top_p": 1.5}, "top_p"), ({"min_p": 2}, "min_p"),
                                             ({"top_k": -1}, "top_k"), ({"repetition_penalty": 0}, "repetition"),
                                             ({"num_samples": 0}, "num_samples"), ({"stop": [""]}, "stop"),
                                             ({"max_new_tokens": 1.5}, "max_new_tokens"), ({"topk": 3}, "topk")])
def test_config_rejects_bad_knobs(changes, needle):
    with pytest.raises(UserError, match=needle):
        GenerateConfig().replace(**changes)


def test_config_from_yaml(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text('temperature: 0\nstop: ["\\n"]\nnum_samples: 2\n')
    assert GenerateConfig.from_yaml(path) == GenerateConfig(temperature=0, stop=["\n"], num_samples=2)
    path.write_text("- 1\n")
    with pytest.raises(UserError, match="mapping"):
        GenerateConfig.from_yaml(path)


# ---- the generate verb on a tiny trained run --------------------------------------------------------------------
TINY = ["--train.max_steps", "2", "--data.vocab_size", "400", "--data.seq_len", "32", "--train.batch_tokens", "256",
        "--train.micro_batch", "8", "--train.eval_every", "100", "--train.eval_tokens", "512", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(f"The capital of France is Paris, said reader {i}." for i in range(200)))
    argv = ["train", "--data", f"web={corpus}", "--name", "tiny", "--out-dir", str(tmp), "--model.preset",
            "tiny-gpt2", *TINY]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return tmp / "tiny"


def _gen(capsys, run_dir, *args):
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The capital", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_cli_seed_stop_zero_tokens(run_dir, capsys, tmp_path):
    first = _gen(capsys, run_dir, "--seed", "7", "--max-new-tokens", "12")
    assert first == _gen(capsys, run_dir, "--seed", "7", "--max-new-tokens", "12")
    assert set(first[0]) >= {"ids", "text", "logprobs", "finish_reason"}
    greedy = _gen(capsys, run_dir, "--temperature", "0", "--max-new-tokens", "12")[0]
    clean = [i for i in range(1, len(greedy["text"]) - 2) if "\ufffd" not in greedy["text"][i : i + 2]]
    if clean:
        stop = greedy["text"][clean[0] : clean[0] + 2]
        cut = _gen(capsys, run_dir, "--temperature", "0", "--max-new-tokens", "12", "--stop", stop, "zz")[0]
        assert cut["text"] == greedy["text"][: greedy["text"].find(stop)] and cut["finish_reason"] == "stop"
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The capital", "--max-new-tokens", "0")
    assert code == 0 and out.strip() == "The capital", err
    (tmp_path / "p.txt").write_text("The capital\n\nParis\n")
    (tmp_path / "g.yaml").write_text("temperature: 0\nmax_new_tokens: 3\n")
    code, out, err = run(capsys, "generate", run_dir, "--prompt-file", tmp_path / "p.txt", "--config",
                         tmp_path / "g.yaml", "--num-samples", "2", "--json")
    assert code == 0, err
    outputs = json.loads(out)
    assert [o["prompt"] for o in outputs] == ["The capital", "The capital", "Paris", "Paris"]
    assert all(len(o["ids"]) <= 3 for o in outputs) and outputs[0]["ids"] == outputs[1]["ids"]  # greedy


def test_cli_says_when_an_output_filled_the_context(run_dir, capsys):
    """Asking for more new tokens than the context holds stops when it is full, and says so
    (a model trained 2 steps draws no eos under greedy decoding here)."""
    from lmforge.runs import load_run

    loaded = load_run(run_dir)
    context, prompt_tokens = loaded.spec.context, len(loaded.tokenizer.encode("The capital"))
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The capital", "--temperature", "0",
                         "--max-new-tokens", str(context + 50))
    assert code == 0, err
    assert f"note: 1 of 1 outputs filled the model's context ({context} tokens, prompt included) before " \
        f"--max-new-tokens {context + 50}" in err
    output = _gen(capsys, run_dir, "--temperature", "0", "--max-new-tokens", str(context + 50))[0]
    assert output["finish_reason"] == "context" and len(output["ids"]) == context + 1 - prompt_tokens


@pytest.mark.parametrize("args", [["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "2"], ["--min-p", "1.5"],
                                  ["--top-k", "-3"], ["--repetition-penalty", "0"], ["--num-samples", "0"],
                                  ["--max-new-tokens", "-1"], ["--prompt", "word " * 200], ["--prompt", ""]])
def test_cli_bad_input_is_one_line_exit_2(run_dir, capsys, args):
    code, out, err = run(capsys, "generate", run_dir, "--prompt", "The", *args)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err


def test_api_generate_takes_beam_settings(model, tok):
    out = api_generate(model, ["the cat"], tokenizer=tok, max_new_tokens=4, num_beams=2, num_samples=2)
    direct = generate(model, tok, ["the cat"], GenerateConfig(max_new_tokens=4, num_beams=2, num_samples=2))
    assert [r.ids for r in out] == [r.ids for r in direct] and out[0].score is not None
