"""EncoderLM (BERT-style): exact counts, padding never leaks, bidirectionality, MLM head and
pooler, learning, precision, checkpointing, and (when transformers is installed) the same
logits as Hugging Face's BertForMaskedLM holding the same weights."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import EncoderLM, build_model
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec, param_counts
from tests.models.overfit import overfit

BERT = get_preset("tiny-bert").spec  # learned positions, post-LN, token types, MLM head, tied
SMALL = BERT.with_(n_encoder_layers=2, d_model=64, n_heads=4, vocab_size=64, context=32)


def _model(spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> EncoderLM:
    torch.manual_seed(seed)
    return build_model(spec).to(dtype)


@pytest.mark.parametrize("name", ["bert-base", "bert-large"])
def test_full_size_param_count_on_meta(name):
    spec = get_preset(name).spec
    with torch.device("meta"):
        model = build_model(spec)
    assert isinstance(model, EncoderLM)
    assert model.num_params() == param_counts(spec).total
    assert model.num_params(non_embedding=True) == param_counts(spec).non_embedding
    assert len(model.blocks) == spec.n_encoder_layers


def test_bert_base_published_count():
    """BertForMaskedLM from google-bert/bert-base-uncased: 109,514,298 parameters."""
    with torch.device("meta"):
        assert build_model(get_preset("bert-base").spec).num_params() == 109_514_298


def test_tiny_bert_counts_runs_and_every_parameter_learns():
    spec = BERT
    model = _model(spec)
    assert model.num_params() == param_counts(spec).total == 974_976
    ids = torch.randint(0, spec.vocab_size, (2, 40))
    types = torch.zeros_like(ids)
    types[:, 20:] = 1
    labels = torch.full_like(ids, -100)
    labels[:, ::5] = ids[:, ::5]
    logits, loss = model(ids, torch.ones_like(ids, dtype=torch.bool), types, labels)
    assert logits.shape == (2, 40, spec.vocab_size)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_token_types_and_pooler_exist_when_the_spec_says_so():
    with_all = _model(SMALL.with_(pooler=True))
    assert with_all.type_emb.weight.shape == (2, 64)
    assert with_all.pooler is not None
    assert with_all.num_params() == param_counts(SMALL.with_(pooler=True)).total
    ids = torch.randint(0, 64, (2, 10))
    hidden = with_all.encode(ids)
    pooled = with_all.pool(hidden)
    assert pooled.shape == (2, 64) and pooled.abs().max() <= 1  # tanh
    with torch.no_grad():  # the second segment changes the output: token types are used
        other = with_all.encode(ids, token_type_ids=torch.ones_like(ids))
    assert (other - hidden).abs().max() > 1e-3

    bare = _model(SMALL.with_(n_token_types=0))
    assert bare.type_emb is None and bare.pooler is None
    with pytest.raises(UserError, match="no token types"):
        bare(ids, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(UserError, match="no pooler"):
        bare.pool(bare.encode(ids))


def test_mlm_head_is_tied_to_the_input_embedding():
    model = _model(SMALL)
    assert model.head.out.weight is model.tok_emb.weight
    assert model.head.out.bias.shape == (64,)
    untied = _model(SMALL.with_(tied_embeddings=False))
    assert untied.head.out.weight is not untied.tok_emb.weight
    assert untied.num_params() == param_counts(SMALL.with_(tied_embeddings=False)).total


def test_padding_never_changes_outputs_at_real_positions():
    """Appending pad tokens masked out by attention_mask leaves every real position's output
    unchanged (float64); without the mask the same pads do change them (the test can fail)."""
    model = _model(SMALL, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 12), generator=gen)
    padded = torch.cat([ids, torch.randint(0, 64, (2, 9), generator=gen)], dim=1)  # junk in the pad slots
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[:, :12] = True
    mask[1, 12:15] = True  # the second row has 3 more real tokens
    with torch.no_grad():
        want = model(ids)
        got = model(padded, mask)
        torch.testing.assert_close(got[0, :12], want[0], rtol=0, atol=1e-10)
        row1 = model(padded[1:, :15])
        torch.testing.assert_close(got[1, :15], row1[0], rtol=0, atol=1e-10)
        unmasked = model(padded)
    assert (unmasked[0, :12] - want[0]).abs().max() > 1e-3


def test_attention_is_bidirectional():
    """Changing the last token changes the first position's output (an encoder sees both ways)."""
    model = _model(SMALL, dtype=torch.float64).eval()
    ids = torch.randint(0, 64, (1, 16))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 64
    with torch.no_grad():
        assert (model(ids)[0, 0] - model(changed)[0, 0]).abs().max() > 1e-4


def test_loss_reductions_and_ignore_index():
    model = _model(SMALL)
    ids = torch.randint(0, 64, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[1, 9] = ids[1, 9]
    with torch.no_grad():
        logits, mean = model(ids, labels=labels)
        _, per_token = model(ids, labels=labels, reduction="none")
        _, total = model(ids, labels=labels, reduction="sum")
    assert per_token.shape == (2, 16) and torch.count_nonzero(per_token) == 3
    assert mean.item() == pytest.approx(total.item() / 3, rel=1e-6)
    manual = -torch.log_softmax(logits[1, 9], -1)[ids[1, 9]]
    assert per_token[1, 9].item() == pytest.approx(manual.item(), rel=1e-5)


def test_bad_inputs_are_user_errors():
    model = _model(SMALL)
    assert model(torch.zeros(1, 32, dtype=torch.long)).shape == (1, 32, 64)
    with pytest.raises(UserError, match="longer than the model's context.*at most 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(UserError, match="attention_mask must have the shape"):
        model(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(UserError, match=r"\(batch, time\)"):
        model(torch.zeros(8, dtype=torch.long))


def test_overfits_one_masked_batch():
    """MLM-style labels on ~25% of positions of one fixed batch: the loss goes near zero."""
    model = _model(SMALL)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (4, 32), generator=gen)
    chosen = torch.rand(4, 32, generator=gen) < 0.25
    inputs = torch.where(chosen, torch.full_like(ids, 3), ids)  # 3 plays the mask token
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    first, last = overfit(model, lambda: model(inputs, labels=labels)[1], steps=200)
    assert first > 3.5  # ~ln 64 = 4.16 at init
    assert last < 0.05


def test_bf16_autocast_forward_on_cpu():
    model = _model(SMALL)
    ids = torch.randint(0, 64, (2, 32))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 20:] = False
    labels = torch.where(torch.rand(2, 32) < 0.3, ids, torch.full_like(ids, -100))
    with torch.no_grad():
        _, fp32_loss = model(ids, mask, labels=labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, loss = model(ids, mask, labels=labels)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(logits.float()).all()
    assert loss.item() == pytest.approx(fp32_loss.item(), abs=0.05)


def test_gradient_checkpointing_gives_the_same_grads():
    model = _model(SMALL)
    ids = torch.randint(0, 64, (2, 32))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 25:] = False
    calls = []
    mlp_forward = model.blocks[0].mlp.forward

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return mlp_forward(x)

    model.blocks[0].mlp.forward = counted

    def grads(on: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model.gradient_checkpointing = on
        model(ids, mask, labels=ids)[1].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads(False)
    assert len(calls) == 1
    recomputed = grads(True)
    assert len(calls) == 2 and model.gradient_checkpointing
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_meta_build_then_materialise_keeps_tied_head():
    with torch.device("meta"):
        model = build_model(BERT)
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.head.out.weight is model.tok_emb.weight
    assert model.num_params() == param_counts(BERT).total
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 1e-3
    assert abs(model.blocks[0].attn.proj.weight.std().item() - 0.02) < 2e-3  # BERT: no residual scaling
    assert torch.all(model.head.out.bias == 0) and torch.all(model.blocks[0].norm1.weight == 1)


@pytest.mark.parametrize(
    "changes",
    [
        dict(positions="rotary"),
        dict(positions="relative", norm="rmsnorm", final_norm=True, embedding_norm=False),  # T5-like encoder
        dict(mlm_head=False, n_token_types=0),  # logits from the tied embedding
        dict(n_kv_heads=2, mlp="swiglu", d_ff=96, bias=False),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_spec_mixes_count_exactly_and_run(changes):
    spec = SMALL.with_(**changes)
    model = _model(spec)
    assert model.num_params() == param_counts(spec).total
    ids = torch.randint(0, 64, (2, 16))
    logits, loss = model(ids, labels=ids)
    assert logits.shape == (2, 16, 64) and torch.isfinite(loss)


def test_untied_encoder_without_head_is_refused():
    with pytest.raises(UserError, match="no output layer"):
        build_model(SMALL.with_(mlm_head=False, tied_embeddings=False))


# ---- architectural fidelity against Hugging Face -------------------------------------------


def _to_hf_bert(model: EncoderLM) -> dict[str, torch.Tensor]:
    """Our state dict under BertForMaskedLM's names."""
    spec, d = model.spec, model.spec.d_model
    sd, out = model.state_dict(), {}
    pre = "bert.embeddings."
    out[pre + "word_embeddings.weight"] = sd["tok_emb.weight"]
    out[pre + "position_embeddings.weight"] = sd["encoder.pos_emb.weight"]
    out[pre + "token_type_embeddings.weight"] = sd["type_emb.weight"]
    for p in ("weight", "bias"):
        out[pre + f"LayerNorm.{p}"] = sd[f"encoder.emb_norm.{p}"]
    for i in range(spec.n_encoder_layers):
        ours, hf = f"encoder.blocks.{i}.", f"bert.encoder.layer.{i}."
        for p in ("weight", "bias"):
            for name, chunk in zip(("query", "key", "value"), sd[ours + f"attn.qkv.{p}"].split(d), strict=True):
                out[hf + f"attention.self.{name}.{p}"] = chunk
            out[hf + f"attention.output.dense.{p}"] = sd[ours + f"attn.proj.{p}"]
            out[hf + f"attention.output.LayerNorm.{p}"] = sd[ours + f"norm1.{p}"]
            out[hf + f"intermediate.dense.{p}"] = sd[ours + f"mlp.fc.{p}"]
            out[hf + f"output.dense.{p}"] = sd[ours + f"mlp.proj.{p}"]
            out[hf + f"output.LayerNorm.{p}"] = sd[ours + f"norm2.{p}"]
    for p in ("weight", "bias"):
        out[f"cls.predictions.transform.dense.{p}"] = sd[f"head.dense.{p}"]
        out[f"cls.predictions.transform.LayerNorm.{p}"] = sd[f"head.norm.{p}"]
    out["cls.predictions.bias"] = sd["head.out.bias"]
    out["cls.predictions.decoder.weight"] = sd["tok_emb.weight"]
    out["cls.predictions.decoder.bias"] = sd["head.out.bias"]
    return out


def test_same_logits_as_hugging_face_bert():
    """BertForMaskedLM (Devlin et al. 2019) with the same tiny shape and our weights gives the
    same logits, with padding and token types (GELU in its tanh form, LayerNorm eps 1e-5)."""
    transformers = pytest.importorskip("transformers")
    spec = SMALL.with_(n_encoder_layers=2)
    model = _model(spec, dtype=torch.float64).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    config = transformers.BertConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.d_model, num_hidden_layers=spec.n_encoder_layers,
        num_attention_heads=spec.n_heads, intermediate_size=spec.ffn, max_position_embeddings=spec.context,
        type_vocab_size=spec.n_token_types, hidden_act="gelu_new", layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tie_word_embeddings=True,
    )
    hf = transformers.BertForMaskedLM(config).to(torch.float64).eval()
    missing, unexpected = hf.load_state_dict(_to_hf_bert(model), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    ids = torch.randint(0, spec.vocab_size, (2, 20))
    types = (torch.arange(20) >= 8).long().expand(2, 20)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 14:] = 0
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = model(ids, mask.bool(), types)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(got[1, :14], want[1, :14], rtol=0, atol=1e-9)
