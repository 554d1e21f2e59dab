"""Sizes: measured bytes (in memory after loading, and on disk) equal the planner's, and the
int8 / int4-g32 targets against fp32 hold."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models.build import build_model
from lmforge.plan.presets import get_preset
from lmforge.plan.storage import weight_bytes
from lmforge.quantize.convert import make_scheme, model_bytes, quantize_model
from lmforge.quantize.report import quantize_run
from lmforge.tensorfile import tensor_data_bytes
from tests.cli.cli_run import run as cli

PRESETS = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-t5", "tiny-bart"]


def _model(preset: str, vocab: int = 360):
    spec = get_preset(preset).spec.with_(vocab_size=vocab)
    torch.manual_seed(0)
    return spec, build_model(spec)


@pytest.mark.parametrize("preset", PRESETS)
def test_bytes_in_memory_equal_the_planner_for_every_scheme(preset):
    """model_bytes (every parameter and buffer, shared storage once) == plan.storage.weight_bytes,
    byte for byte, for each precision, group size and embedding choice; a group size that does
    not divide a layer's input width is refused (tiny-llama's d_ff = 352 = 11 x 32)."""
    spec, _ = _model(preset)
    for precision, group, keep in [("fp32", None, True), ("bf16", None, True), ("fp16", None, True),
                                   ("int8", None, True), ("int8", None, False), ("int4", 32, True),
                                   ("int4", 32, False), ("int4", 64, False), ("int4", 128, True)]:
        _, model = _model(preset)
        scheme = make_scheme(precision, group, keep_embeddings=keep)
        divides = all(m.in_features % (group or 1) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))
        if not divides:
            with pytest.raises(UserError, match="does not divide"):
                quantize_model(model, scheme)
            continue
        quantize_model(model, scheme)
        expected = weight_bytes(spec, precision, group or 128, keep_embeddings_16bit=keep)
        assert model_bytes(model) == expected, (precision, group, keep)


def test_int8_and_int4_size_targets_on_disk_and_in_memory(tiny_runs, tmp_path):
    """int8 <= 26% and int4-g32 <= 16% of the fp32 bytes, on the saved file and in memory after
    loading (every matrix quantized, --no-keep-embeddings; a Llama-style model has no position
    table, which would stay 16-bit); the file's tensor data is exactly the planner's bytes."""
    run_dir = tiny_runs("tiny-llama")
    fp32_file = (run_dir / "model.safetensors").stat().st_size
    for precision, group, limit in [("int8", None, 0.26), ("int4", 32, 0.16)]:
        out = tmp_path / precision
        report = quantize_run(run_dir, precision, group_size=group, keep_embeddings=False, out=out, max_tokens=512)
        assert report.before.file_bytes == fp32_file
        assert report.after.file_bytes / fp32_file <= limit, report.after.file_bytes / fp32_file
        assert report.after.memory_bytes / report.before.memory_bytes <= limit
        assert report.after.memory_bytes == report.after.planner_memory_bytes  # as loaded here
        assert tensor_data_bytes(out / "model.safetensors") == report.after.planner_bytes


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_lmforge_memory_agrees_with_the_measured_bytes(preset, capsys):
    """What `lmforge memory PRESET --group-size 32` prints for each precision is what a model of
    that preset takes once quantized to it (memory quantizes the embeddings too)."""
    code, out, err = cli(capsys, "memory", preset, "--group-size", "32", "--json")
    assert code == 0, err
    printed = {row["precision"]: row["bytes"] for row in json.loads(out)["storage"]}
    spec = get_preset(preset).spec
    assert set(printed) == {"fp32", "fp16", "bf16", "int8", "int4"}
    for precision, planned in printed.items():
        _, model = _model(preset, spec.vocab_size)
        quantize_model(model, make_scheme(precision, 32 if precision == "int4" else None, keep_embeddings=False))
        assert model_bytes(model) == planned, precision
