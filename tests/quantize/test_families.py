"""All three families quantize, write, load back and run: decoder, encoder, encoder-decoder."""

from __future__ import annotations

import pytest
import torch

from lmforge.api import generate
from lmforge.generate.fill_mask import fill_mask
from lmforge.quantize.convert import model_bytes
from lmforge.quantize.modules import Int4Linear, Int8Linear, QuantizedEmbedding
from lmforge.quantize.report import quantize_run
from lmforge.runs import load_run

PRESETS = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-t5", "tiny-bart"]
SCHEMES = [("bf16", None, True), ("int8", None, True), ("int4", 32, True), ("int4", 32, False)]


def _logits(model, family: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if family == "decoder":
            return model(ids).float()
        if family == "encoder":
            return model(ids).float()
        return model.decode(ids, model.encode(ids)).float()


@pytest.mark.parametrize("preset", PRESETS)
def test_quantize_load_and_run_every_family(preset, tiny_runs, tmp_path):
    """For each scheme: the written run loads through load_run with exactly the planner's bytes (as
    loaded here: kept tensors in fp32 where bf16 is slow),
    holds quantized modules (a tied head shares the embedding's codes), gives logits close to the
    float model's, and samples (decoder, encoder-decoder) or fills masks (encoder)."""
    run_dir = tiny_runs(preset)
    source = load_run(run_dir)
    family = source.spec.family
    ids = torch.randint(3, source.spec.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    reference = _logits(source.model, family, ids)
    for precision, group, keep in SCHEMES:
        out = tmp_path / f"{precision}-{keep}"
        report = quantize_run(run_dir, precision, group_size=group, keep_embeddings=keep, out=out, max_tokens=1024)
        assert report.after.memory_bytes == report.after.planner_memory_bytes
        run = load_run(out)
        assert model_bytes(run.model) == report.after.memory_bytes
        kinds = {type(m) for m in run.model.modules()}
        if precision == "int8":
            assert Int8Linear in kinds
        if precision == "int4":
            assert Int4Linear in kinds
        if not keep:
            assert QuantizedEmbedding in kinds
            if source.spec.tied_embeddings and family != "encoder":
                assert run.model.lm_head.weight_q is run.model.tok_emb.weight_q  # tied: one set of codes
        tolerance = {"bf16": 0.05, "int8": 0.08, "int4": 0.5}[precision]
        error = float((_logits(run.model, family, ids) - reference).abs().max() / reference.abs().max())
        assert error < tolerance, (precision, keep, error)
        if family == "encoder":
            assert len(fill_mask(run.model, run.tokenizer, "ab<mask>c", 3)[0]) == 3
        else:
            result = generate(out, "abc", max_new_tokens=4, temperature=0)
            assert len(result) == 1 and isinstance(result[0].text, str)


def test_quantized_run_round_trips_its_tensors(tiny_runs, tmp_path):
    """Loading in the plain layout gives back exactly the codes and scales quantization made."""
    from lmforge.quantize.convert import make_scheme, quantize_model
    from lmforge.quantize.write import write_quantized_run

    source = load_run(tiny_runs("tiny-gpt2"))
    scheme = make_scheme("int4", 32, keep_embeddings=False)
    model = quantize_model(source.model, scheme)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    write_quantized_run(source, model, scheme, tmp_path / "q")
    loaded = load_run(tmp_path / "q", layout="plain").model.state_dict()
    assert expected.keys() == loaded.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].equal(tensor), name
