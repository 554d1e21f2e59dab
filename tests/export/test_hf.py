"""Export to transformers, read by transformers itself, and back.

For each of the five architectures a small trained run is exported; transformers'
``AutoModelFor...`` loads it with nothing missing or unexpected and no warnings; its
logits equal lmforge's within 1e-4 (fp32) on a right-padded batch (real positions); greedy
decoding picks the same tokens (BERT: the same argmax at masked positions);
``AutoTokenizer`` encodes a paragraph of a shared corpus to lmforge's ids; importing the
export back gives the run's weights bit for bit.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.api import generate
from lmforge.export.hf import export_hf
from lmforge.export.importer import import_hf
from lmforge.runs import load_run
from tests.corpora import corpus

transformers = pytest.importorskip("transformers")

LAYOUTS = [("tiny-gpt2", {}), ("tiny-llama", {}), ("tiny-llama", {"tied_embeddings": True}), ("tiny-bert", {}),
           ("tiny-t5", {}), ("tiny-bart", {})]


def paragraph() -> str:
    """800 characters of tinyshakespeare (the test skips where the shared corpora are not)."""
    return corpus("tinyshakespeare.txt").read_text(encoding="utf-8")[:800]


def padded_batch(vocab: int, generator: torch.Generator, lengths=(14, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, T) token ids and their mask, the second row right-padded."""
    T = max(lengths)
    ids = torch.randint(4, vocab, (len(lengths), T), generator=generator)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, :n] = True
    return ids.masked_fill(~mask, 0), mask


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def load_hf(path: Path, auto_class: str):
    """The exported model through transformers' own loader: (model, loading info, warnings)."""
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = getattr(transformers, auto_class).from_pretrained(path, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    said = handler.records + [str(w.message) for w in caught if "weight" in str(w.message).lower()]
    return model.eval(), info, said


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    made = {}

    def get(preset, overrides):
        key = (preset, tuple(sorted(overrides.items())))
        if key not in made:
            run_dir = trained_run(preset, **overrides)
            made[key] = (run_dir, export_hf(run_dir, root / f"{run_dir.name}-hf"))
        return made[key]

    return get


@pytest.mark.parametrize(("preset", "overrides"), LAYOUTS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_transformers_loads_the_export_and_computes_the_same_logits(exported, preset, overrides):
    run_dir, result = exported(preset, overrides)
    assert sorted(result.files) == sorted(
        ["README.md", "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
         "tokenizer_config.json"] + ([] if preset == "tiny-bert" else ["generation_config.json"]))
    model, info, said = load_hf(result.path, result.auto_class)
    assert type(model).__name__ == result.arch
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not said, said
    ours = load_run(run_dir)
    assert sum(p.numel() for p in model.parameters()) == ours.model.num_params()
    g = torch.Generator().manual_seed(0)
    ids, mask = padded_batch(ours.spec.vocab_size, g)
    with torch.no_grad():
        if ours.spec.family == "decoder":
            a = ours.model(ids, attention_mask=mask)
            b = model(input_ids=ids, attention_mask=mask.long()).logits
            real = mask
        elif ours.spec.family == "encoder":
            a = ours.model(ids, attention_mask=mask)
            b = model(input_ids=ids, attention_mask=mask.long()).logits
            real = mask
        else:
            dec, dec_mask = padded_batch(ours.spec.vocab_size, g, lengths=(7, 5))
            a = ours.model(ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
            b = model(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=dec,
                      decoder_attention_mask=dec_mask.long()).logits
            real = dec_mask
    assert a.shape == b.shape
    diff = (a - b).abs()[real].max().item()
    assert diff < 1e-4, diff


@pytest.mark.parametrize(("preset", "overrides"), [layout for layout in LAYOUTS if layout[0] != "tiny-bert"],
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()) or "x")
def test_greedy_generation_picks_the_same_tokens(exported, preset, overrides):
    run_dir, result = exported(preset, overrides)
    model, _, _ = load_hf(result.path, result.auto_class)
    ours = load_run(run_dir)
    prompt = "abcabd" if ours.spec.family == "decoder" else "abcd efgh abca"
    mine = generate(run_dir, prompt, max_new_tokens=20, temperature=0)[0]
    prompt_ids = torch.tensor([mine.prompt_ids])
    with torch.no_grad():
        out = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=20,
                             do_sample=False, num_beams=1, pad_token_id=ours.tokenizer.pad_id)
    theirs = out[0, prompt_ids.shape[1]:] if ours.spec.family == "decoder" else out[0, 1:]  # skip the start token
    theirs = [t for t in theirs.tolist() if t != ours.tokenizer.pad_id]
    mine_ids = list(mine.ids)
    if theirs and theirs[-1] == ours.tokenizer.eos_id and mine.finish_reason == "eos":
        theirs = theirs[:-1]
    mine_ids = [t for t in mine_ids if t != ours.tokenizer.eos_id]
    assert len(mine_ids) >= 5 or mine.finish_reason == "eos"
    assert mine_ids == theirs


def test_bert_export_fills_masks_like_lmforge(exported):
    run_dir, result = exported("tiny-bert", {})
    model, _, _ = load_hf(result.path, result.auto_class)
    ours = load_run(run_dir)
    ids = torch.tensor([ours.tokenizer.encode("abcdabcdefgh abcdab")])
    ids[0, [2, 5, 9]] = ours.tokenizer.mask_id
    with torch.no_grad():
        a = ours.model(ids).argmax(-1)
        b = model(input_ids=ids).logits.argmax(-1)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("preset", "overrides"), LAYOUTS[:2] + LAYOUTS[3:], ids=lambda v: v if isinstance(v, str)
                         else "default")
def test_auto_tokenizer_encodes_like_lmforge(exported, preset, overrides):
    run_dir, result = exported(preset, overrides)
    theirs = transformers.AutoTokenizer.from_pretrained(result.path)
    ours = load_run(run_dir).tokenizer
    text = paragraph()
    assert theirs(text)["input_ids"] == ours.encode(text)  # no special tokens added either
    assert theirs.eos_token_id == ours.eos_id and theirs.bos_token_id == ours.bos_id
    assert theirs.pad_token_id == ours.pad_id and theirs.mask_token_id == ours.mask_id
    assert theirs.model_max_length == load_run(run_dir).spec.context
    assert theirs.decode(ours.encode(text)) == text


@pytest.mark.parametrize(("preset", "overrides"), LAYOUTS, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_import_of_the_export_gives_the_weights_back_bit_for_bit(exported, preset, overrides, tmp_path):
    run_dir, result = exported(preset, overrides)
    back = import_hf(str(result.path), tmp_path / "back")
    original = load_file(str(run_dir / "model.safetensors"))
    imported = load_file(str(back.run_dir / "model.safetensors"))
    assert sorted(original) == sorted(imported)
    for name, tensor in original.items():
        assert tensor.dtype == imported[name].dtype and torch.equal(tensor, imported[name]), name
    a, b = load_run(run_dir), load_run(back.run_dir)
    assert (a.spec.d_head, a.spec.kv_heads, a.spec.ffn) == (b.spec.d_head, b.spec.kv_heads, b.spec.ffn)
    assert a.model.num_params() == b.model.num_params()
    assert a.tokenizer.sha256 == b.tokenizer.sha256


def test_the_model_card_says_what_the_run_was(exported):
    run_dir, result = exported("tiny-gpt2", {})
    card = (result.path / "README.md").read_text(encoding="utf-8")
    assert "GPT2LMHeadModel" in card and "markov=builtin:markov" in card
    assert "tokens trained | 20,480" in card  # 40 steps x 512 tokens
    assert "validation loss" in card and "lmforge" in card


def test_a_quantized_run_exports_its_dequantized_weights(trained_run, tmp_path):
    """lmforge quantize's int8 run -> transformers: the float weights it computes with, said so."""
    from lmforge.export.source import export_source
    from lmforge.quantize.report import quantize_run

    quantized = quantize_run(trained_run("tiny-llama"), "int8", out=tmp_path / "int8", max_tokens=512).out
    result = export_hf(quantized, tmp_path / "hf")
    assert any("dequantized" in n for n in result.notes)
    assert "dequantized" in (result.path / "README.md").read_text(encoding="utf-8")
    model, info, said = load_hf(result.path, result.auto_class)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not said
    float_weights = export_source(quantized).weights  # the int8 codes times their scales, in fp32
    theirs = model.state_dict()
    q, k, v = (theirs[f"model.layers.0.self_attn.{n}_proj.weight"] for n in ("q", "k", "v"))
    assert torch.equal(torch.cat([q, k, v]), float_weights["blocks.0.attn.qkv.weight"])
    source = load_run(trained_run("tiny-llama")).model.state_dict()["blocks.0.attn.qkv.weight"]
    assert not torch.equal(source, float_weights["blocks.0.attn.qkv.weight"])  # int8 really rounded them
    assert (source - float_weights["blocks.0.attn.qkv.weight"]).abs().max() < 0.01 * source.abs().max() + 1e-3
