"""build_model: exact parameter counts against the planner, and precise refusals.

The planner's counts (`lmforge.plan.specs.param_counts`) are themselves checked against
Hugging Face transformers and published model cards in tests/plan/test_presets.py; here
the built torch module must hold exactly that many parameters.
"""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import DecoderLM, EncoderDecoderLM, EncoderLM, build_model
from lmforge.plan.presets import PRESETS, get_preset
from lmforge.plan.specs import ModelSpec, param_counts

DECODER_PRESETS = [
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-65b", "llama-2-7b", "llama-2-13b", "llama-2-70b",
    "llama-3-8b", "pythia-160m", "opt-125m", "opt-175b", "gpt3-175b", "jurassic-1-178b", "mt-nlg-530b",
    "tiny-gpt2", "tiny-llama",
]
ENCODER_PRESETS = ["bert-base", "bert-large", "tiny-bert"]
ENCODER_DECODER_PRESETS = ["t5-small", "t5-base", "t5-large", "tiny-t5", "bart-base", "bart-large", "tiny-bart"]
NOT_YET = {  # preset -> words the error must contain
    "bloom-176b": "alibi", "bloomberggpt-50b": "alibi", "gopher-280b": "xl-relative", "chinchilla-70b": "xl-relative",
}
BUILT = DECODER_PRESETS + ENCODER_PRESETS + ENCODER_DECODER_PRESETS


def test_catalog_is_fully_covered():
    """Every preset is either built (and counted) or refused here; a new preset must join a list."""
    assert set(BUILT) | set(NOT_YET) == set(PRESETS)
    assert len(set(BUILT)) == len(BUILT) and not set(BUILT) & set(NOT_YET)


@pytest.mark.parametrize("name", ENCODER_PRESETS + ENCODER_DECODER_PRESETS)
def test_encoder_family_presets_build_with_the_planned_count_on_meta(name):
    """Encoders and encoder-decoders (tests/models/test_encoder*.py go further)."""
    spec = get_preset(name).spec
    with torch.device("meta"):
        model = build_model(spec)
    assert isinstance(model, EncoderLM if spec.family == "encoder" else EncoderDecoderLM)
    assert model.num_params() == param_counts(spec).total
    assert model.num_params(non_embedding=True) == param_counts(spec).non_embedding
    assert len(model.blocks) == spec.n_layers


@pytest.mark.parametrize("name", DECODER_PRESETS)
def test_full_size_param_count_on_meta(name):
    spec = get_preset(name).spec
    with torch.device("meta"):
        model = build_model(spec)
    counts = param_counts(spec)
    assert model.num_params() == counts.total
    assert sum(p.numel() for p in model.parameters()) == counts.total
    assert model.num_params(non_embedding=True) == counts.non_embedding
    assert len(model.blocks) == spec.n_decoder_layers


def test_published_exact_counts():
    """GPT-2 small (124,439,808: GPT2LMHeadModel) and Llama-2-7B (6,738,415,616: HF config
    meta-llama/Llama-2-7b-hf), as built."""
    with torch.device("meta"):
        assert build_model(get_preset("gpt2").spec).num_params() == 124_439_808
        assert build_model(get_preset("llama-2-7b").spec).num_params() == 6_738_415_616


def _shrink(spec: ModelSpec) -> ModelSpec:
    """The same architecture flags (norm, mlp, positions, bias, ties, offsets, GQA) at a tiny size."""
    return spec.with_(
        n_decoder_layers=2, d_model=64, n_heads=4, n_kv_heads=2 if spec.n_kv_heads else None, head_dim=None,
        d_ff=96 if spec.d_ff else None, vocab_size=101, context=16,
    )


@pytest.mark.parametrize("name", DECODER_PRESETS)
def test_tiny_version_of_each_preset_builds_counts_and_runs(name):
    spec = _shrink(get_preset(name).spec)
    torch.manual_seed(0)
    model = build_model(spec)
    assert model.num_params() == param_counts(spec).total
    idx = torch.randint(0, spec.vocab_size, (2, spec.context))
    logits, loss = model(idx, idx.roll(-1, dims=1))
    assert logits.shape == (2, spec.context, spec.vocab_size)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "changes",
    [
        dict(positions="rotary", norm="layernorm", mlp="gelu"),  # GPT-NeoX style
        dict(positions="learned", norm="rmsnorm", mlp="geglu", bias=False),
        dict(mlp="relu", position_offset=2, tied_embeddings=False),  # OPT-like, untied
        dict(embedding_norm=True, final_norm=False),  # BLOOM's embedding norm, no final norm
        dict(head_dim=24, n_heads=4, n_kv_heads=1, d_ff=40),  # head_dim * heads != d_model, MQA
        dict(positions="rotary", mlp="swiglu", norm="rmsnorm", bias=True),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_spec_mixes_count_exactly(changes):
    spec = get_preset("tiny-gpt2").spec.with_(n_decoder_layers=2, d_model=64, vocab_size=50, context=8, **changes)
    model = build_model(spec)
    assert model.num_params() == param_counts(spec).total
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 50)


def test_embedding_norm_and_final_norm_present_or_absent():
    base = get_preset("tiny-gpt2").spec
    with_norms = build_model(base.with_(embedding_norm=True))
    assert isinstance(with_norms.emb_norm, torch.nn.LayerNorm)
    without = build_model(base.with_(final_norm=False))
    assert isinstance(without.final_norm, torch.nn.Identity)
    assert with_norms.num_params() - without.num_params() == 2 * 2 * base.d_model


@pytest.mark.parametrize("name", sorted(NOT_YET))
def test_not_buildable_presets_raise_user_error(name):
    with pytest.raises(UserError, match="not buildable yet") as err, torch.device("meta"):
        build_model(get_preset(name).spec)
    message = str(err.value)
    assert NOT_YET[name] in message and name in message
    assert "\n" not in message


@pytest.mark.parametrize("family", ["encoder", "encoder-decoder"])
def test_alibi_and_xl_positions_are_refused_in_every_family(family):
    base = get_preset("tiny-bert" if family == "encoder" else "tiny-t5").spec
    for positions in ("alibi", "xl-relative"):
        with pytest.raises(UserError, match=f"positions not buildable yet.*{positions}"):
            build_model(base.with_(positions=positions))


def test_relative_positions_in_a_decoder_are_refused():
    spec = get_preset("tiny-gpt2").spec.with_(positions="relative")
    with pytest.raises(UserError, match="not buildable yet in a decoder-only model.*encoder-decoder models only"):
        build_model(spec)


def test_other_unbuildable_decoder_specs():
    with pytest.raises(UserError, match="even head dimension"):
        build_model(get_preset("tiny-llama").spec.with_(head_dim=33))
    with pytest.raises(UserError, match="token-type"):
        build_model(get_preset("tiny-gpt2").spec.with_(n_token_types=2))
    with pytest.raises(UserError, match="token-type.*encoder-decoder"):
        build_model(get_preset("tiny-t5").spec.with_(pooler=True))
    with pytest.raises(UserError, match="expected a ModelSpec"):
        build_model({"d_model": 64})


def test_meta_build_then_materialise_keeps_tied_head():
    """FSDP-style deferred init: build on meta, ``to_empty``, ``init_weights`` re-ties the head."""
    spec = get_preset("tiny-gpt2").spec
    with torch.device("meta"):
        model = build_model(spec)
    model.to_empty(device="cpu")
    model.init_weights()
    assert isinstance(model, DecoderLM)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == param_counts(spec).total
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 1e-3
