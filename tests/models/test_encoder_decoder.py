"""EncoderDecoderLM (T5 and BART styles): exact counts, no leaks (decoder causality, padding in
the encoder and in cross-attention), T5 relative buckets, learning, precision, checkpointing,
and (when transformers is installed) the same logits as Hugging Face's
T5ForConditionalGeneration and BartForConditionalGeneration holding the same weights."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import EncoderDecoderLM, build_model
from lmforge.models.relative_position import RelativePositionBias, relative_position_bucket
from lmforge.plan.presets import get_preset
from lmforge.plan.specs import ModelSpec, param_counts
from tests.models.overfit import overfit

T5 = get_preset("tiny-t5").spec  # relative buckets, pre-norm RMSNorm, ReLU, no biases, tied
TINY_BART = get_preset("bart-base").spec.with_(  # post-LN, learned positions (+2 rows), embedding norm, GELU
    n_encoder_layers=2, n_decoder_layers=2, d_model=128, n_heads=4, d_ff=512, vocab_size=4096, context=256
)
SMALL = dict(n_encoder_layers=2, n_decoder_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=64, context=32)
STYLES = {"t5": T5.with_(**SMALL), "bart": TINY_BART.with_(**SMALL)}
V = 64


def _model(spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> EncoderDecoderLM:
    torch.manual_seed(seed)
    return build_model(spec).to(dtype)


def _ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "name,published",
    [("t5-small", 60_506_624), ("t5-base", 222_903_552), ("t5-large", 737_668_096),
     ("bart-base", 139_420_416), ("bart-large", 406_291_456)],
)
def test_full_size_param_count_on_meta(name, published):
    """Counts of the HF models (T5ForConditionalGeneration google-t5/t5-*, BartForConditionalGeneration
    facebook/bart-*), equal to the planner's."""
    spec = get_preset(name).spec
    with torch.device("meta"):
        model = build_model(spec)
    assert isinstance(model, EncoderDecoderLM)
    assert model.num_params() == param_counts(spec).total == published
    assert model.num_params(non_embedding=True) == param_counts(spec).non_embedding
    assert len(model.blocks) == spec.n_encoder_layers + spec.n_decoder_layers
    assert model.blocks[0] is model.encoder.blocks[0] and model.blocks[-1] is model.decoder.blocks[-1]


@pytest.mark.parametrize("spec", [T5, TINY_BART], ids=["tiny-t5", "tiny-bart"])
def test_tiny_models_count_run_and_every_parameter_learns(spec):
    model = _model(spec)
    assert model.num_params() == param_counts(spec).total
    ids, dec = torch.randint(0, spec.vocab_size, (2, 30)), torch.randint(0, spec.vocab_size, (2, 12))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 20:] = False
    logits, loss = model(ids, mask, dec, labels=dec.roll(-1, dims=1))
    assert logits.shape == (2, 12, spec.vocab_size)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_style_specific_modules():
    t5, bart = _model(STYLES["t5"]), _model(STYLES["bart"])
    assert t5.lm_head.weight is t5.tok_emb.weight and bart.lm_head.weight is bart.tok_emb.weight
    assert t5.encoder.rel_bias.weight.shape == (32, 4) and t5.encoder.rel_bias.bidirectional
    assert not t5.decoder.rel_bias.bidirectional and t5.encoder.pos_emb is None
    assert t5.out_scale == pytest.approx(64**-0.5) and t5.encoder.pre_norm
    assert bart.encoder.pos_emb.weight.shape == (34, 64) and bart.decoder.pos_emb.weight.shape == (34, 64)
    assert bart.encoder.rel_bias is None and not bart.encoder.pre_norm and bart.out_scale == 1.0
    assert isinstance(bart.encoder.emb_norm, torch.nn.LayerNorm)


# ---- no leaks -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_decoder_does_not_see_future_targets(style):
    """Changing decoder_input_ids after t changes no logit at or before t (float64), and does
    change later ones (the test can fail)."""
    model = _model(STYLES[style], dtype=torch.float64).eval()
    ids, dec = _ids(2, 20, seed=1), _ids(2, 24, seed=2)
    gen = torch.Generator().manual_seed(3)
    for t in (0, 9, 22):
        changed = dec.clone()
        changed[:, t + 1 :] = torch.randint(0, V, (2, 24 - t - 1), generator=gen)
        with torch.no_grad():
            a, b = model(ids, None, dec), model(ids, None, changed)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-12)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-4


@pytest.mark.parametrize("style", STYLES)
def test_decoder_sees_the_encoder(style):
    model = _model(STYLES[style], dtype=torch.float64).eval()
    ids, dec = _ids(2, 20, seed=1), _ids(2, 8, seed=2)
    changed = ids.clone()
    changed[:, 5] = (ids[:, 5] + 1) % V
    with torch.no_grad():
        assert (model(ids, None, dec)[:, 0] - model(changed, None, dec)[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("style", STYLES)
def test_padding_never_changes_encoder_outputs_or_decoder_logits(style):
    """Appending masked pad tokens to the input leaves the encoder outputs at real positions and
    every decoder logit unchanged (float64): padding keys are masked in the encoder and padded
    memory positions in cross-attention. Without the mask the pads do change them."""
    model = _model(STYLES[style], dtype=torch.float64).eval()
    ids, dec = _ids(2, 14, seed=4), _ids(2, 9, seed=5)
    padded = torch.cat([ids, _ids(2, 7, seed=6)], dim=1)
    mask = torch.zeros(2, 21, dtype=torch.bool)
    mask[:, :14] = True
    with torch.no_grad():
        torch.testing.assert_close(model.encode(padded, mask)[:, :14], model.encode(ids), rtol=0, atol=1e-10)
        want = model(ids, None, dec)
        torch.testing.assert_close(model(padded, mask, dec), want, rtol=0, atol=1e-10)
        assert (model(padded, None, dec) - want).abs().max() > 1e-4


@pytest.mark.parametrize("style", STYLES)
def test_cross_attention_ignores_padded_memory(style):
    """Whatever the memory holds at padded positions, the decoder's logits stay the same."""
    model = _model(STYLES[style], dtype=torch.float64).eval()
    ids, dec = _ids(2, 16, seed=7), _ids(2, 6, seed=8)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, 10:] = False
    with torch.no_grad():
        memory = model.encode(ids, mask)
        junk = memory.clone()
        junk[0, 10:] = 100 * torch.randn(6, 64, dtype=torch.float64)
        torch.testing.assert_close(model.decode(dec, junk, mask), model.decode(dec, memory, mask), rtol=0, atol=1e-10)
        assert (model.decode(dec, junk) - model.decode(dec, memory)).abs().max() > 1e-4


@pytest.mark.parametrize("style", STYLES)
def test_decoder_padding_mask(style):
    """Padded decoder keys are masked: right padding leaves real positions as they were."""
    model = _model(STYLES[style], dtype=torch.float64).eval()
    ids, dec = _ids(1, 10, seed=9), _ids(1, 12, seed=10)
    dmask = torch.ones(1, 12, dtype=torch.bool)
    dmask[0, 7:] = False
    with torch.no_grad():
        want = model(ids, None, dec[:, :7])
        got = model(ids, None, dec, dmask)
    torch.testing.assert_close(got[:, :7], want, rtol=0, atol=1e-10)
    assert torch.isfinite(got).all()


# ---- T5 relative position buckets ----------------------------------------------------------


def test_relative_buckets_match_the_reference_by_hand():
    """Raffel et al. 2020, Sec. 2.1; Mesh TensorFlow / HF ``_relative_position_bucket`` with
    32 buckets and max_distance 128, relative position = key - query.

    Bidirectional: 16 buckets a side, 8 exact (0..7), then 8 + floor(ln(r/8) / ln(128/8) * 8):
    r=8 -> 8, 15 -> 8 + floor(1.81) = 9, 16 -> 8 + 2 = 10, 100 -> 8 + floor(7.29) = 15,
    200 -> capped at 15; keys after the query add 16.
    Unidirectional: 32 buckets, 16 exact (0..15), then 16 + floor(ln(r/16) / ln(8) * 16):
    r=16 -> 16, 32 -> 16 + floor(5.33) = 21, 100 -> 16 + floor(14.1) = 30, 200 -> capped at 31;
    keys after the query -> bucket 0.
    """
    offsets = [0, 1, -1, 7, -7, 8, -8, 15, -15, 16, -16, 32, -32, 100, -100, 200, -200]
    bidirectional = [0, 17, 1, 23, 7, 24, 8, 25, 9, 26, 10, 28, 12, 31, 15, 31, 15]
    unidirectional = [0, 0, 1, 0, 7, 0, 8, 0, 15, 0, 16, 0, 21, 0, 30, 0, 31]
    rel = torch.tensor(offsets)
    assert relative_position_bucket(rel, bidirectional=True).tolist() == bidirectional
    assert relative_position_bucket(rel, bidirectional=False).tolist() == unidirectional
    every = torch.arange(-300, 301)
    uni = relative_position_bucket(every, bidirectional=False)
    assert sorted(uni.unique().tolist()) == list(range(32))
    bidi = relative_position_bucket(every, bidirectional=True)  # bucket 16 (offset +0) is never used
    assert sorted(bidi.unique().tolist()) == [b for b in range(32) if b != 16]


def test_relative_buckets_equal_hugging_face_everywhere():
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    every = torch.arange(-600, 601)
    for bidi in (True, False):
        want = t5.T5Attention._relative_position_bucket(every, bidirectional=bidi, num_buckets=32, max_distance=128)
        assert torch.equal(relative_position_bucket(every, bidirectional=bidi), want)


def test_relative_bias_depends_only_on_the_offset():
    table = RelativePositionBias(32, 4, bidirectional=True)
    bias = table(10, 10)  # (1, h, Tq, Tk)
    assert bias.shape == (1, 4, 10, 10)
    torch.testing.assert_close(bias[0, :, 3, 5], table.weight[18])  # key 2 after the query
    torch.testing.assert_close(bias[0, :, 7, 2], table.weight[5])  # key 5 before
    torch.testing.assert_close(bias[0, :, 1, 1], bias[0, :, 8, 8])


# ---- learning, precision, checkpointing, errors -----------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_overfits_one_teacher_forced_batch(style):
    model = _model(STYLES[style])
    ids, targets = _ids(4, 24, seed=11), _ids(4, 17, seed=12)
    dec, labels = targets[:, :-1], targets[:, 1:]
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 18:] = False
    first, last = overfit(model, lambda: model(ids, mask, dec, labels=labels)[1], steps=200)
    assert first > 3.5  # ~ln 64 = 4.16 at init
    assert last < 0.05


@pytest.mark.parametrize("style", STYLES)
def test_bf16_autocast_forward_on_cpu(style):
    model = _model(STYLES[style])
    ids, dec = _ids(2, 32, seed=13), _ids(2, 16, seed=14)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 20:] = False
    with torch.no_grad():
        _, fp32_loss = model(ids, mask, dec, labels=dec)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, loss = model(ids, mask, dec, labels=dec)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.isfinite(logits.float()).all()
    assert loss.item() == pytest.approx(fp32_loss.item(), abs=0.05)


@pytest.mark.parametrize("style", STYLES)
def test_gradient_checkpointing_gives_the_same_grads(style):
    model = _model(STYLES[style])
    ids, dec = _ids(2, 32, seed=15), _ids(2, 16, seed=16)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 25:] = False
    calls = []
    for stack in (model.encoder, model.decoder):
        forward = stack.blocks[0].mlp.forward
        stack.blocks[0].mlp.forward = lambda x, f=forward: (calls.append(1), f(x))[1]

    def grads(on: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model.gradient_checkpointing = on
        model(ids, mask, dec, labels=dec)[1].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads(False)
    assert len(calls) == 2
    recomputed = grads(True)
    assert len(calls) == 4 and model.gradient_checkpointing  # both stacks recomputed in backward
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_bad_inputs_are_user_errors():
    model = _model(STYLES["t5"])
    ok = torch.zeros(1, 32, dtype=torch.long)
    assert model(ok, None, ok).shape == (1, 32, V)
    long = torch.zeros(1, 33, dtype=torch.long)
    with pytest.raises(UserError, match="input_ids: sequence is longer than the model's context.*at most 32"):
        model(long, None, ok)
    with pytest.raises(UserError, match="decoder_input_ids: sequence is longer"):
        model(ok, None, long)
    with pytest.raises(UserError, match="needs decoder_input_ids"):
        model(ok)
    with pytest.raises(UserError, match="memory_mask must have the shape"):
        model.decode(ok, model.encode(ok), torch.ones(1, 5, dtype=torch.bool))


def test_meta_build_then_materialise_keeps_tied_head_and_t5_init():
    """T5 init (HF T5PreTrainedModel._init_weights): embedding N(0, 1), q N(0, (d k)^-1/2)."""
    with torch.device("meta"):
        model = build_model(T5)
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == param_counts(T5).total
    assert model.tok_emb.weight.std().item() == pytest.approx(1.0, rel=0.02)
    q = model.encoder.blocks[0].attn.qkv.weight[:128]
    assert q.std().item() == pytest.approx((128 * 32) ** -0.5, rel=0.05)
    assert model.decoder.blocks[1].mlp.proj.weight.std().item() == pytest.approx(512**-0.5, rel=0.05)


@pytest.mark.parametrize(
    "changes",
    [
        dict(positions="rotary"),
        dict(tied_embeddings=False, mlp="geglu"),  # T5 v1.1-like
        dict(n_kv_heads=2),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_spec_mixes_count_exactly_and_run(changes):
    spec = STYLES["t5"].with_(**changes)
    model = _model(spec)
    assert model.num_params() == param_counts(spec).total
    logits, loss = model(_ids(2, 12), None, _ids(2, 8), labels=_ids(2, 8, seed=1))
    assert logits.shape == (2, 8, V) and torch.isfinite(loss)


# ---- architectural fidelity against Hugging Face -------------------------------------------


def _perturb(model: torch.nn.Module) -> None:
    """Non-trivial norms and biases, so that a misplaced one shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def _compare(model: EncoderDecoderLM, hf: torch.nn.Module, state: dict, atol: float = 1e-9) -> None:
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "embed_tokens" not in k and k != "final_logits_bias"]
    ids, dec = _ids(2, 20, seed=20), _ids(2, 11, seed=21)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        got = model(ids, mask.bool(), dec)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def test_same_logits_as_hugging_face_t5():
    """T5ForConditionalGeneration (v1.0: ReLU, tied, output scaled by d^-1/2), same tiny shape."""
    transformers = pytest.importorskip("transformers")
    spec = STYLES["t5"]
    model = _model(spec, dtype=torch.float64).eval()
    _perturb(model)
    config = transformers.T5Config(
        vocab_size=V, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        layer_norm_epsilon=1e-5, feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0,
    )
    hf = transformers.T5ForConditionalGeneration(config).to(torch.float64).eval()
    sd, state = model.state_dict(), {"shared.weight": model.state_dict()["tok_emb.weight"]}
    state["lm_head.weight"] = sd["tok_emb.weight"]
    for stack in ("encoder", "decoder"):
        state[f"{stack}.final_layer_norm.weight"] = sd[f"{stack}.final_norm.weight"]
        state[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = sd[f"{stack}.rel_bias.weight"]
        for i in range(2):
            ours, hf_pre = f"{stack}.blocks.{i}.", f"{stack}.block.{i}.layer."
            for name, w in zip("qkv", sd[ours + "attn.qkv.weight"].split(64), strict=True):
                state[hf_pre + f"0.SelfAttention.{name}.weight"] = w
            state[hf_pre + "0.SelfAttention.o.weight"] = sd[ours + "attn.proj.weight"]
            state[hf_pre + "0.layer_norm.weight"] = sd[ours + "norm1.weight"]
            ff = "1"
            if stack == "decoder":
                state[hf_pre + "1.EncDecAttention.q.weight"] = sd[ours + "cross.q.weight"]
                for name, w in zip("kv", sd[ours + "cross.kv.weight"].split(64), strict=True):
                    state[hf_pre + f"1.EncDecAttention.{name}.weight"] = w
                state[hf_pre + "1.EncDecAttention.o.weight"] = sd[ours + "cross.proj.weight"]
                state[hf_pre + "1.layer_norm.weight"] = sd[ours + "norm_cross.weight"]
                ff = "2"
            state[hf_pre + f"{ff}.DenseReluDense.wi.weight"] = sd[ours + "mlp.fc.weight"]
            state[hf_pre + f"{ff}.DenseReluDense.wo.weight"] = sd[ours + "mlp.proj.weight"]
            state[hf_pre + f"{ff}.layer_norm.weight"] = sd[ours + "norm2.weight"]
    # both RMSNorms compute their statistics in float32 even for float64 inputs (HF T5LayerNorm
    # only the variance, ours the whole norm): differences ~1e-6; a wrong architecture gives > 1e-2
    _compare(model, hf, state, atol=1e-5)


def test_same_logits_as_hugging_face_bart():
    """BartForConditionalGeneration (post-LN, learned positions offset 2, embedding LayerNorm),
    same tiny shape, GELU in its tanh form."""
    transformers = pytest.importorskip("transformers")
    spec = STYLES["bart"]
    model = _model(spec, dtype=torch.float64).eval()
    _perturb(model)
    config = transformers.BartConfig(
        vocab_size=V, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32,
        activation_function="gelu_new", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        scale_embedding=False, tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=None,
    )
    hf = transformers.BartForConditionalGeneration(config).to(torch.float64).eval()
    sd = model.state_dict()
    state = {"model.shared.weight": sd["tok_emb.weight"], "lm_head.weight": sd["tok_emb.weight"]}
    for stack in ("encoder", "decoder"):
        pre = f"model.{stack}."
        state[pre + "embed_positions.weight"] = sd[f"{stack}.pos_emb.weight"]
        for p in ("weight", "bias"):
            state[pre + f"layernorm_embedding.{p}"] = sd[f"{stack}.emb_norm.{p}"]
            for i in range(2):
                ours, hf_pre = f"{stack}.blocks.{i}.", pre + f"layers.{i}."
                for name, w in zip("qkv", sd[ours + f"attn.qkv.{p}"].split(64), strict=True):
                    state[hf_pre + f"self_attn.{name}_proj.{p}"] = w
                state[hf_pre + f"self_attn.out_proj.{p}"] = sd[ours + f"attn.proj.{p}"]
                state[hf_pre + f"self_attn_layer_norm.{p}"] = sd[ours + f"norm1.{p}"]
                if stack == "decoder":
                    state[hf_pre + f"encoder_attn.q_proj.{p}"] = sd[ours + f"cross.q.{p}"]
                    for name, w in zip("kv", sd[ours + f"cross.kv.{p}"].split(64), strict=True):
                        state[hf_pre + f"encoder_attn.{name}_proj.{p}"] = w
                    state[hf_pre + f"encoder_attn.out_proj.{p}"] = sd[ours + f"cross.proj.{p}"]
                    state[hf_pre + f"encoder_attn_layer_norm.{p}"] = sd[ours + f"norm_cross.{p}"]
                state[hf_pre + f"fc1.{p}"] = sd[ours + f"mlp.fc.{p}"]
                state[hf_pre + f"fc2.{p}"] = sd[ours + f"mlp.proj.{p}"]
                state[hf_pre + f"final_layer_norm.{p}"] = sd[ours + f"norm2.{p}"]
    _compare(model, hf, state)
