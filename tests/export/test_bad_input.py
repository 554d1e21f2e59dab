"""Every way an export or an import can be asked wrongly: one line ``error: ...``, exit 2,
nothing written (no output, no temporary directory left beside it)."""

from __future__ import annotations

import json
import shutil

import pytest

from lmforge.plan.presets import get_preset
from lmforge.train.checkpoint import save_weights
from lmforge.train.config import load_config, save_config
from tests.cli.cli_run import run


def made_run(root, preset, **model):
    """A run directory with untrained weights (what export reads), built without training."""
    from lmforge.models.build import build_model
    from lmforge.train.model_setup import model_spec

    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    config = load_config(None, {"name": "run", "out_dir": str(root), "model.preset": preset, "data.seq_len": 32,
                                **{f"model.{k}": v for k, v in model.items()}})
    save_config(config, run_dir / "config.yaml")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    inner = HFTokenizer(models.WordLevel({"<|endoftext|>": 0, **{chr(97 + i): i + 1 for i in range(26)}}))
    inner.add_special_tokens(["<|endoftext|>"])
    inner.save(str(run_dir / "tokenizer.json"))
    spec = model_spec(config.model, 27, 32)
    save_weights(run_dir / "model.safetensors", build_model(spec))
    return run_dir


def _hf_dir(root, trained_run, config: dict, files=("tokenizer.json", "model.safetensors")):
    source = trained_run("tiny-gpt2")
    export = root / "gpt2-hf"
    if not export.exists():
        code = run_cli(["export", source, "--to", "hf", "--out", export])
        assert code == 0
    bad = root / "bad-hf"
    bad.mkdir()
    for name in files:
        shutil.copyfile(export / name, bad / name)
    base = json.loads((export / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**base, **config}))
    return bad


def run_cli(argv):
    from lmforge.cli.main import main

    return main([str(a) for a in argv])


def _no_weights(p, t):
    d = made_run(p, "tiny-gpt2")
    (d / "model.safetensors").unlink()
    return ["export", d, "--to", "hf", "--out", p / "out"]


CASES = [
    ("no weights", _no_weights, "the run directory has no weights"),
    ("unknown --to", lambda p, t: ["export", made_run(p, "tiny-gpt2"), "--to", "onnx", "--out", p / "out"],
     "invalid choice: 'onnx'"),
    ("gguf for an encoder", lambda p, t: ["export", made_run(p, "tiny-bert"), "--to", "gguf", "--out", p / "out"],
     "encoder"),
    ("--quant with hf", lambda p, t: ["export", made_run(p, "tiny-gpt2"), "--to", "hf", "--quant", "q8_0",
                                      "--out", p / "out"], "--quant is for --to gguf"),
    ("no exact equivalent", lambda p, t: ["export", made_run(p, "tiny-gpt2", norm="rmsnorm"), "--to", "hf",
                                          "--out", p / "out"], "GPT2LMHeadModel needs norm='layernorm'"),
    ("llama without a gated mlp", lambda p, t: ["export", made_run(p, "tiny-llama", mlp="gelu"), "--to", "hf",
                                                "--out", p / "out"], "LlamaForCausalLM needs mlp="),
    ("rotary encoder-decoder", lambda p, t: ["export", made_run(p, "tiny-bart", positions="rotary"), "--to", "hf",
                                             "--out", p / "out"], "positions=rotary"),
    ("missing run", lambda p, t: ["export", p / "nothing", "--to", "hf", "--out", p / "out"],
     "run directory not found"),
    ("unsupported architecture", lambda p, t: ["import", _hf_dir(p, t, {"model_type": "gpt_neox"}), "--out", p / "out"],
     "architecture not supported for import"),
    ("no tokenizer.json", lambda p, t: ["import", _hf_dir(p, t, {}, files=("model.safetensors",)), "--out", p / "out"],
     "has no tokenizer.json"),
    ("no weights file", lambda p, t: ["import", _hf_dir(p, t, {}, files=("tokenizer.json",)), "--out", p / "out"],
     "has no model.safetensors"),
    ("a pickle only", lambda p, t: ["import", _pickle_only(_hf_dir(p, t, {}, files=("tokenizer.json",))),
                                    "--out", p / "out"], "pytorch_model.bin is a pickle"),
    ("inconsistent config", lambda p, t: ["import", _hf_dir(p, t, {"n_head": 3}), "--out", p / "out"],
     "inconsistent config.json"),
    ("config against weights", lambda p, t: ["import", _hf_dir(p, t, {"n_layer": 2}), "--out", p / "out"],
     "tensors its config.json does not describe"),
    ("config wider than weights", lambda p, t: ["import", _hf_dir(p, t, {"n_inner": 1024}), "--out", p / "out"],
     "does not fit its config.json"),
    ("gelu erf", lambda p, t: ["import", _hf_dir(p, t, {"activation_function": "gelu"}), "--out", p / "out"],
     "activation_function='gelu' cannot be imported exactly"),
    ("missing directory", lambda p, t: ["import", p / "nowhere", "--out", p / "out"], "checkpoint directory not found"),
    ("unreadable config", lambda p, t: ["import", _garbage_config(_hf_dir(p, t, {})), "--out", p / "out"],
     "unreadable config.json"),
]


def _pickle_only(directory):
    (directory / "pytorch_model.bin").write_bytes(b"not loaded")
    return directory


def _garbage_config(directory):
    (directory / "config.json").write_text("{not json")
    return directory


@pytest.mark.parametrize(("make_argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_line_exit_2_nothing_written(tmp_path, trained_run, capsys, make_argv, needle):
    argv = make_argv(tmp_path, trained_run)
    capsys.readouterr()
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("to", ["hf", "gguf"])
def test_an_existing_out_needs_force(tmp_path, trained_run, capsys, to):
    pytest.importorskip("gguf") if to == "gguf" else None
    source = trained_run("tiny-gpt2")
    out = tmp_path / ("out.gguf" if to == "gguf" else "out")
    out.mkdir() if to == "hf" else out.write_text("keep me")
    code, _, err = run(capsys, "export", source, "--to", to, "--out", out)
    assert code == 2 and "exists" in err and "--force" in err
    assert (out.is_dir() and not any(out.iterdir())) if to == "hf" else out.read_text() == "keep me"
    code, _, err = run(capsys, "export", source, "--to", to, "--out", out, "--force")
    assert code == 0, err
    assert (out / "model.safetensors").is_file() if to == "hf" else out.read_bytes()[:4] == b"GGUF"


def test_import_needs_force_over_an_existing_run(tmp_path, trained_run, capsys):
    export = tmp_path / "hf"
    assert run(capsys, "export", trained_run("tiny-gpt2"), "--to", "hf", "--out", export)[0] == 0
    (tmp_path / "run").mkdir()
    code, _, err = run(capsys, "import", export, "--out", tmp_path / "run")
    assert code == 2 and "exists" in err
    code, out, err = run(capsys, "import", export, "--out", tmp_path / "run", "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["class"] == "GPT2LMHeadModel"


def test_export_refusals_name_the_field_for_every_family():
    """Each class refuses the fields it cannot express (a spec-level check, no files)."""
    from lmforge.errors import UserError
    from lmforge.export.hf import arch_for

    refusals = {
        "tiny-gpt2": {"bias": False, "tied_embeddings": True},
        "tiny-llama": {"norm": "layernorm"},
        "tiny-bert": {"mlp": "swiglu"},
        "tiny-t5": {"bias": True},
        "tiny-bart": {"position_offset": 0},
    }
    for preset, changes in refusals.items():
        spec = get_preset(preset).spec
        arch_for(spec)  # the preset itself exports
        field, value = next(iter(changes.items()))
        with pytest.raises(UserError, match=f"{field}={value!r}"):
            arch_for(spec.with_(**{field: value}))
