"""lmforge's BART layout <-> transformers ``BartForConditionalGeneration`` (Lewis et al. 2020).

Post-LN layers with biases, learned positions per stack with two unused offset rows first
(``embed_positions`` holds context + 2 rows, as lmforge's ``pos_emb`` with
position_offset 2), an embedding LayerNorm per stack (``layernorm_embedding``), no final
norm, GELU (tanh: ``gelu_new``) or ReLU, embeddings unscaled, the tied output projection,
and transformers' ``final_logits_bias`` buffer, which lmforge does not have: exported as
zeros, and an import refuses a checkpoint where it is not zero.
"""

from __future__ import annotations

import torch

from lmforge.errors import UserError
from lmforge.export.hf_arch import HFArch, SpecialIds, get, refuse_config, require, require_plain_heads
from lmforge.export.weights import copy, split
from lmforge.plan.specs import ModelSpec

ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu"}
_IMPORTED = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
OFFSET = 2  # BartLearnedPositionalEmbedding's offset


class Bart(HFArch):
    model_type = "bart"
    hf_class = "BartForConditionalGeneration"
    auto_class = "AutoModelForSeq2SeqLM"
    base_preset = "bart-base"

    def check(self, spec: ModelSpec) -> None:
        require(spec, self, "norm", ("layernorm",))
        require(spec, self, "mlp", tuple(ACTIVATIONS))
        require(spec, self, "bias", (True,))
        require(spec, self, "position_offset", (OFFSET,))
        require(spec, self, "embedding_norm", (True,))
        require(spec, self, "final_norm", (False,), "BART's layers are post-LN")
        require(spec, self, "tied_embeddings", (True,))
        require(spec, self, "norm_eps", (1e-5,), "BART's LayerNorms use torch's default epsilon")
        require_plain_heads(spec, self)

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": spec.vocab_size, "d_model": spec.d_model,
            "encoder_layers": spec.n_encoder_layers, "decoder_layers": spec.n_decoder_layers,
            "encoder_attention_heads": spec.n_heads, "decoder_attention_heads": spec.n_heads,
            "encoder_ffn_dim": spec.ffn, "decoder_ffn_dim": spec.ffn, "activation_function": ACTIVATIONS[spec.mlp],
            "max_position_embeddings": spec.context, "scale_embedding": False, "dropout": 0.0,
            "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
            "init_std": 0.02, "is_encoder_decoder": True, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "decoder_start_token_id": tokens.bos,
            "pad_token_id": tokens.pad if tokens.pad is not None else tokens.eos, "forced_eos_token_id": None,
            "forced_bos_token_id": None,
        }

    def rules(self, spec: ModelSpec) -> list:
        d = spec.d_model
        rules = [copy("tok_emb.weight", "model.shared.weight")]
        for stack, n_layers in (("encoder", spec.n_encoder_layers), ("decoder", spec.n_decoder_layers)):
            top = f"model.{stack}"
            rules += [copy(f"{stack}.pos_emb.weight", f"{top}.embed_positions.weight"),
                      copy(f"{stack}.emb_norm.weight", f"{top}.layernorm_embedding.weight"),
                      copy(f"{stack}.emb_norm.bias", f"{top}.layernorm_embedding.bias")]
            for i in range(n_layers):
                ours, theirs = f"{stack}.blocks.{i}", f"{top}.layers.{i}"
                for p in ("weight", "bias"):
                    qkv = tuple(f"{theirs}.self_attn.{n}_proj.{p}" for n in ("q", "k", "v"))
                    rules += [split(f"{ours}.attn.qkv.{p}", qkv, (d, d, d)),
                              copy(f"{ours}.attn.proj.{p}", f"{theirs}.self_attn.out_proj.{p}"),
                              copy(f"{ours}.norm1.{p}", f"{theirs}.self_attn_layer_norm.{p}"),
                              copy(f"{ours}.mlp.fc.{p}", f"{theirs}.fc1.{p}"),
                              copy(f"{ours}.mlp.proj.{p}", f"{theirs}.fc2.{p}"),
                              copy(f"{ours}.norm2.{p}", f"{theirs}.final_layer_norm.{p}")]
                    if stack == "decoder":
                        cross = f"{theirs}.encoder_attn"
                        rules += [copy(f"{ours}.cross.q.{p}", f"{cross}.q_proj.{p}"),
                                  split(f"{ours}.cross.kv.{p}", (f"{cross}.k_proj.{p}", f"{cross}.v_proj.{p}"), (d, d)),
                                  copy(f"{ours}.cross.proj.{p}", f"{cross}.out_proj.{p}"),
                                  copy(f"{ours}.norm_cross.{p}", f"{theirs}.encoder_attn_layer_norm.{p}")]
        return rules

    def constants(self, spec: ModelSpec) -> dict[str, torch.Tensor]:
        return {"final_logits_bias": torch.zeros(1, spec.vocab_size)}

    def check_constants(self, tensors: dict, where: str) -> None:
        bias = tensors.get("final_logits_bias")
        if bias is not None and bool(bias.abs().max() > 0):
            raise UserError("BartForConditionalGeneration with a non-zero final_logits_bias cannot be imported exactly",
                            where, "lmforge's BART has no output bias")

    def spec_fields(self, config: dict) -> dict:
        act = get(config, "activation_function", self, default="gelu")
        if act not in _IMPORTED:
            raise refuse_config(self, "activation_function", act, "lmforge's GELU is the tanh approximation (gelu_new)")
        if config.get("scale_embedding", False):
            raise refuse_config(self, "scale_embedding", True, "lmforge's BART does not scale its embeddings")
        for key in ("normalize_before", "add_final_layer_norm", "add_bias_logits"):
            if config.get(key):
                raise refuse_config(self, key, config[key], "that is mBART's layout, not BART's")
        heads = int(get(config, "encoder_attention_heads", self))
        for a, b in (("decoder_attention_heads", heads), ("decoder_ffn_dim", get(config, "encoder_ffn_dim", self))):
            if int(get(config, a, self)) != int(b):
                raise refuse_config(self, a, config[a], "lmforge's two stacks have the same heads and MLP width")
        return dict(
            family="encoder-decoder", n_encoder_layers=int(get(config, "encoder_layers", self)),
            n_decoder_layers=int(get(config, "decoder_layers", self)), d_model=int(get(config, "d_model", self)),
            n_heads=heads, d_ff=int(get(config, "encoder_ffn_dim", self)),
            vocab_size=int(get(config, "vocab_size", self)),
            context=int(get(config, "max_position_embeddings", self)), mlp=_IMPORTED[act], norm="layernorm",
            positions="learned", bias=True, tied_embeddings=True, final_norm=False, embedding_norm=True,
            position_offset=OFFSET, norm_eps=1e-5,
        )

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        return name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight",
                        "final_logits_bias")
