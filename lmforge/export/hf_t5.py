"""lmforge's T5 layout <-> transformers ``T5ForConditionalGeneration`` (Raffel et al. 2020).

Pre-norm RMSNorm layers (T5's ``T5LayerNorm`` is an RMSNorm without mean or bias), no
biases, q.k unscaled, one relative-position table per stack held by the first block
(``block.0.layer.0.SelfAttention.relative_attention_bias``: (buckets, heads), as
lmforge's ``rel_bias.weight``), max distance 128, the tied output projection on the
decoder output scaled by d_model^-1/2 (T5 v1.0). MLP: ReLU, GELU (tanh) or gated
(``gated-gelu`` is GEGLU with tanh GELU, ``gated-silu`` SwiGLU: ``wi_0`` is the gate,
``wi_1`` the up projection).
"""

from __future__ import annotations

from lmforge.export.hf_arch import HFArch, SpecialIds, get, refuse_config, require
from lmforge.export.weights import copy, split
from lmforge.models.relative_position import MAX_DISTANCE
from lmforge.plan.specs import ModelSpec

FEED_FORWARD = {"relu": "relu", "gelu": "gelu_new", "geglu": "gated-gelu", "swiglu": "gated-silu"}
_IMPORTED = {"relu": "relu", "gelu_new": "gelu", "gated-gelu": "geglu", "gated-gelu_new": "geglu",
             "gated-silu": "swiglu"}


class T5(HFArch):
    model_type = "t5"
    hf_class = "T5ForConditionalGeneration"
    auto_class = "AutoModelForSeq2SeqLM"
    base_preset = "t5-small"

    def check(self, spec: ModelSpec) -> None:
        require(spec, self, "norm", ("rmsnorm",))
        require(spec, self, "bias", (False,))
        require(spec, self, "final_norm", (True,))
        require(spec, self, "embedding_norm", (False,))
        require(spec, self, "n_kv_heads", (None, spec.n_heads), "T5 has no grouped-query attention")
        require(spec, self, "tied_embeddings", (True,), "transformers ties T5's head to its embedding")

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": spec.vocab_size, "d_model": spec.d_model, "d_kv": spec.d_head, "d_ff": spec.ffn,
            "num_layers": spec.n_encoder_layers, "num_decoder_layers": spec.n_decoder_layers,
            "num_heads": spec.n_heads, "relative_attention_num_buckets": spec.relative_buckets,
            "relative_attention_max_distance": MAX_DISTANCE, "layer_norm_epsilon": spec.norm_eps,
            "feed_forward_proj": FEED_FORWARD[spec.mlp], "dropout_rate": 0.0, "initializer_factor": 1.0,
            "is_encoder_decoder": True, "tie_word_embeddings": True, "use_cache": True,
            "decoder_start_token_id": tokens.bos, "eos_token_id": tokens.eos,
            "pad_token_id": tokens.pad if tokens.pad is not None else tokens.eos,
            "n_positions": spec.context,
        }

    def rules(self, spec: ModelSpec) -> list:
        h, k, f = spec.n_heads, spec.d_head, spec.ffn
        gated = spec.mlp in ("geglu", "swiglu")
        rules = [copy("tok_emb.weight", "shared.weight")]
        for stack, n_layers in (("encoder", spec.n_encoder_layers), ("decoder", spec.n_decoder_layers)):
            rules.append(copy(f"{stack}.rel_bias.weight",
                              f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"))
            for i in range(n_layers):
                ours, theirs = f"{stack}.blocks.{i}", f"{stack}.block.{i}"
                attn = f"{theirs}.layer.0.SelfAttention"
                rules += [copy(f"{ours}.norm1.weight", f"{theirs}.layer.0.layer_norm.weight"),
                          split(f"{ours}.attn.qkv.weight", (f"{attn}.q.weight", f"{attn}.k.weight", f"{attn}.v.weight"),
                                (h * k, h * k, h * k)),
                          copy(f"{ours}.attn.proj.weight", f"{attn}.o.weight")]
                ff = 1
                if stack == "decoder":
                    cross = f"{theirs}.layer.1.EncDecAttention"
                    rules += [copy(f"{ours}.norm_cross.weight", f"{theirs}.layer.1.layer_norm.weight"),
                              copy(f"{ours}.cross.q.weight", f"{cross}.q.weight"),
                              split(f"{ours}.cross.kv.weight", (f"{cross}.k.weight", f"{cross}.v.weight"),
                                    (h * k, h * k)),
                              copy(f"{ours}.cross.proj.weight", f"{cross}.o.weight")]
                    ff = 2
                dense = f"{theirs}.layer.{ff}.DenseReluDense"
                rules.append(copy(f"{ours}.norm2.weight", f"{theirs}.layer.{ff}.layer_norm.weight"))
                if gated:
                    parts = (f"{dense}.wi_0.weight", f"{dense}.wi_1.weight")  # gate, up
                    rules.append(split(f"{ours}.mlp.fc.weight", parts, (f, f)))
                else:
                    rules.append(copy(f"{ours}.mlp.fc.weight", f"{dense}.wi.weight"))
                rules.append(copy(f"{ours}.mlp.proj.weight", f"{dense}.wo.weight"))
            rules.append(copy(f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight"))
        return rules

    def spec_fields(self, config: dict) -> dict:
        proj = get(config, "feed_forward_proj", self, default="relu")
        if proj not in _IMPORTED:
            raise refuse_config(self, "feed_forward_proj", proj,
                                "lmforge's MLPs are relu, gelu_new, gated-gelu and gated-silu")
        if int(config.get("relative_attention_max_distance", MAX_DISTANCE)) != MAX_DISTANCE:
            raise refuse_config(self, "relative_attention_max_distance", config["relative_attention_max_distance"],
                                f"lmforge's relative buckets reach {MAX_DISTANCE}")
        if config.get("tie_word_embeddings", True) is False:
            raise refuse_config(self, "tie_word_embeddings", False, "lmforge's T5 layout ties (T5 v1.0)")
        layers = int(get(config, "num_layers", self))
        return dict(
            family="encoder-decoder", n_encoder_layers=layers,
            n_decoder_layers=int(get(config, "num_decoder_layers", self, default=layers)),
            d_model=int(get(config, "d_model", self)), n_heads=int(get(config, "num_heads", self)),
            head_dim=int(get(config, "d_kv", self)), d_ff=int(get(config, "d_ff", self)),
            vocab_size=int(get(config, "vocab_size", self)),
            context=int(get(config, "n_positions", self, default=512)), mlp=_IMPORTED[proj], norm="rmsnorm",
            positions="relative", bias=False, tied_embeddings=True, final_norm=True, embedding_norm=False,
            relative_buckets=int(get(config, "relative_attention_num_buckets", self, default=32)),
            norm_eps=float(get(config, "layer_norm_epsilon", self, default=1e-6)),
        )

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        return name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
