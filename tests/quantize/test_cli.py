"""`lmforge quantize` end to end, the verbs that load its output, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from tests.cli.cli_run import run


def _one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_quantize_prints_before_and_after_and_the_run_loads_everywhere(tiny_runs, tmp_path, capsys):
    run_dir = tiny_runs("tiny-gpt2")
    out = tmp_path / "int4"
    code, text, err = run(capsys, "quantize", run_dir, "--to", "int4", "--group-size", "32", "--out", out,
                          "--max-tokens", "1024")
    assert code == 0, err
    for row in ("weights on disk", "weights in memory, loaded", "planner's weight bytes", "perplexity",
                "bits per byte", "before (fp32)", "after (int4-g32)"):
        assert row in text, row
    info = json.loads((out / "quantization.json").read_text())
    assert info["scheme"] == {"precision": "int4", "group_size": 32, "scale_method": "absmax",
                              "keep_embeddings": True}
    assert len(info["source"]["sha256"]) == 64 and "blocks.0.norm1.weight" in info["kept_16bit"]
    assert {"config.yaml", "tokenizer.json", "model.safetensors", "quantization.json"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left
    code, text, err = run(capsys, "generate", out, "--prompt", "ab", "--max-new-tokens", "5", "--json")
    assert code == 0, err
    assert len(json.loads(text)[0]["ids"]) > 0
    code, text, err = run(capsys, "eval", out, "--max-tokens", "512", "--json")
    assert code == 0, err
    assert json.loads(text)["all"]["perplexity"] > 1


def test_quantize_json_and_fill_mask_on_an_encoder(tiny_runs, tmp_path, capsys):
    out, bert = tmp_path / "bert-int8", tiny_runs("tiny-bert")
    capsys.readouterr()  # what training the fixture printed
    code, text, err = run(capsys, "quantize", bert, "--to", "int8", "--scale", "mse", "--out", out,
                          "--max-tokens", "512", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["after"]["memory_bytes"] == report["after"]["planner_memory_bytes"]
    assert report["before"]["memory_bytes"] > 3.5 * report["after"]["memory_bytes"] / 2  # fp32 vs int8 + 16-bit
    code, text, err = run(capsys, "fill-mask", out, "ab<mask>", "--json")
    assert code == 0, err
    assert len(json.loads(text)[0]) == 5


def test_calibration_text_is_used_for_quality_and_mse_scales(tiny_runs, tmp_path, capsys):
    text = tmp_path / "held_out.txt"
    text.write_text("abcabcabdhgfabc " * 40, encoding="utf-8")
    gpt2 = tiny_runs("tiny-gpt2")
    capsys.readouterr()
    code, out, err = run(capsys, "quantize", gpt2, "--to", "int8", "--scale", "mse",
                         "--calibration", text, "--out", tmp_path / "cal", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["held_out"].startswith("calibration text")
    assert json.loads((tmp_path / "cal" / "quantization.json").read_text())["calibration"]["tokens"] > 100


@pytest.mark.parametrize("case", ["precision", "group_size", "group_divides", "already", "empty", "missing",
                                  "out_exists"])
def test_bad_input_is_a_one_line_error(case, tiny_runs, tmp_path, capsys):
    gpt2, llama = tiny_runs("tiny-gpt2"), tiny_runs("tiny-llama")
    capsys.readouterr()
    if case == "precision":
        _one_line_error(*run(capsys, "quantize", gpt2, "--to", "int3"), "invalid choice", "int3")
    elif case == "group_size":
        _one_line_error(*run(capsys, "quantize", gpt2, "--to", "int4", "--group-size", "48"), "group size", "48")
    elif case == "group_divides":  # tiny-llama's MLP input is 352 wide: 352 / 64 = 5.5
        _one_line_error(*run(capsys, "quantize", llama, "--to", "int4", "--group-size", "64", "--out",
                             tmp_path / "x"), "does not divide", "in_features=352")
        assert not (tmp_path / "x").exists()
    elif case == "already":
        assert run(capsys, "quantize", gpt2, "--to", "int8", "--out", tmp_path / "q", "--max-tokens", "256")[0] == 0
        _one_line_error(*run(capsys, "quantize", tmp_path / "q", "--to", "int4"), "quantized already", "--force")
        code, out, err = run(capsys, "quantize", tmp_path / "q", "--to", "int4", "--force", "--max-tokens", "256",
                             "--json")
        assert code == 0, err
        assert json.loads(out)["before"]["label"] == "int8"
    elif case == "empty":
        empty = tmp_path / "empty.txt"
        empty.write_text("  \n", encoding="utf-8")
        _one_line_error(*run(capsys, "quantize", gpt2, "--to", "int8", "--calibration", empty, "--out",
                             tmp_path / "y"), "calibration file is empty")
        assert not (tmp_path / "y").exists()
    elif case == "missing":
        _one_line_error(*run(capsys, "quantize", tmp_path / "nope", "--to", "int8"), "run directory not found")
        _one_line_error(*run(capsys, "generate", tmp_path / "nope", "--prompt", "a"), "not found")
    elif case == "out_exists":
        (tmp_path / "taken").mkdir()
        _one_line_error(*run(capsys, "quantize", gpt2, "--to", "int8", "--out", tmp_path / "taken"), "exists",
                        "--force")


# issue 12: options that do not apply and bad numbers on the verbs that read a run
NOT_APPLYING = [
    (["quantize", "{run}", "--to", "int8", "--group-size", "32"], "--group-size applies to int4 only"),
    (["quantize", "{run}", "--to", "bf16", "--scale", "mse"], "--scale applies to int8 and int4 only"),
    (["quantize", "{run}", "--to", "fp16", "--no-keep-embeddings"], "--no-keep-embeddings applies to int8"),
    (["quantize", "{run}", "--to", "int8", "--max-tokens", "-5"], "--max-tokens must be positive"),
    (["generate", "{run}", "--prompt", "a", "--prompt", "b", "--stream"], "--stream shows one output"),
    (["generate", "{run}", "--prompt", "a", "--length-penalty", "nan"], "length_penalty must be a finite number"),
    (["generate", "{run}", "--prompt", "a", "--length-penalty", "2"], "length_penalty ranks beams"),
    (["generate", "{run}", "--prompt", "a", "--num-beams", "2", "--top-p", "0.9"], "sampling settings do not apply"),
    (["generate", "{run}", "--prompt", "a", "--num-beams", "2", "--num-samples", "3"], "at most num_beams outputs"),
    (["eval", "{run}", "--max-tokens", "-1"], "--max-tokens must be positive"),
]


@pytest.mark.parametrize("argv, needle", NOT_APPLYING, ids=[needle for _, needle in NOT_APPLYING])
def test_options_that_do_not_apply_are_refused(argv, needle, tiny_runs, tmp_path, capsys):
    gpt2 = tiny_runs("tiny-gpt2")
    capsys.readouterr()
    before = sorted(p.name for p in gpt2.parent.iterdir())
    code, out, err = run(capsys, *[str(gpt2) if a == "{run}" else a for a in argv])
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert sorted(p.name for p in gpt2.parent.iterdir()) == before  # nothing written
