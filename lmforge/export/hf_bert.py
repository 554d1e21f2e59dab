"""lmforge's BERT layout <-> transformers ``BertForMaskedLM`` (Devlin et al. 2019).

Post-LN layers (lmforge's ``norm1`` is transformers' ``attention.output.LayerNorm``,
``norm2`` is ``output.LayerNorm``), token + learned position + token-type embeddings with
the embedding LayerNorm, GELU (tanh: ``gelu_new``) or ReLU, and the MLM head: dense,
activation, LayerNorm (``cls.predictions.transform``), then the vocabulary projection tied
to the word embeddings with its own bias (``cls.predictions.bias``).
"""

from __future__ import annotations

from lmforge.export.hf_arch import HFArch, SpecialIds, get, refuse_config, require, require_plain_heads
from lmforge.export.weights import copy, split
from lmforge.plan.specs import ModelSpec

ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu"}
_IMPORTED = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


class Bert(HFArch):
    model_type = "bert"
    hf_class = "BertForMaskedLM"
    auto_class = "AutoModelForMaskedLM"
    base_preset = "bert-base"

    def check(self, spec: ModelSpec) -> None:
        require(spec, self, "positions", ("learned",))
        require(spec, self, "norm", ("layernorm",))
        require(spec, self, "mlp", tuple(ACTIVATIONS))
        require(spec, self, "bias", (True,))
        require(spec, self, "position_offset", (0,))
        require(spec, self, "embedding_norm", (True,))
        require(spec, self, "final_norm", (False,), "BERT's layers are post-LN")
        require(spec, self, "mlm_head", (True,))
        require(spec, self, "pooler", (False,), "BertForMaskedLM has no pooler")
        require(spec, self, "tied_embeddings", (True,))
        if spec.n_token_types < 1:
            require(spec, self, "n_token_types", (1, 2), "BERT always has a token-type table")
        require_plain_heads(spec, self)

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": spec.vocab_size, "hidden_size": spec.d_model, "num_hidden_layers": spec.n_encoder_layers,
            "num_attention_heads": spec.n_heads, "intermediate_size": spec.ffn, "hidden_act": ACTIVATIONS[spec.mlp],
            "max_position_embeddings": spec.context, "type_vocab_size": spec.n_token_types,
            "layer_norm_eps": spec.norm_eps, "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "is_decoder": False,
            "add_cross_attention": False, "tie_word_embeddings": True, "initializer_range": 0.02,
            "pad_token_id": tokens.pad if tokens.pad is not None else tokens.eos,
        }

    def generation_config(self, spec: ModelSpec, tokens: SpecialIds) -> dict | None:
        return None

    def rules(self, spec: ModelSpec) -> list:
        d = spec.d_model
        emb = "bert.embeddings"
        rules = [copy("tok_emb.weight", f"{emb}.word_embeddings.weight"),
                 copy("encoder.pos_emb.weight", f"{emb}.position_embeddings.weight"),
                 copy("type_emb.weight", f"{emb}.token_type_embeddings.weight"),
                 copy("encoder.emb_norm.weight", f"{emb}.LayerNorm.weight"),
                 copy("encoder.emb_norm.bias", f"{emb}.LayerNorm.bias")]
        for i in range(spec.n_encoder_layers):
            ours, theirs = f"encoder.blocks.{i}", f"bert.encoder.layer.{i}"
            for p in ("weight", "bias"):
                qkv = tuple(f"{theirs}.attention.self.{n}.{p}" for n in ("query", "key", "value"))
                rules += [split(f"{ours}.attn.qkv.{p}", qkv, (d, d, d)),
                          copy(f"{ours}.attn.proj.{p}", f"{theirs}.attention.output.dense.{p}"),
                          copy(f"{ours}.norm1.{p}", f"{theirs}.attention.output.LayerNorm.{p}"),
                          copy(f"{ours}.mlp.fc.{p}", f"{theirs}.intermediate.dense.{p}"),
                          copy(f"{ours}.mlp.proj.{p}", f"{theirs}.output.dense.{p}"),
                          copy(f"{ours}.norm2.{p}", f"{theirs}.output.LayerNorm.{p}")]
        for p in ("weight", "bias"):
            rules += [copy(f"head.dense.{p}", f"cls.predictions.transform.dense.{p}"),
                      copy(f"head.norm.{p}", f"cls.predictions.transform.LayerNorm.{p}")]
        rules.append(copy("head.out.bias", "cls.predictions.bias"))
        return rules

    def spec_fields(self, config: dict) -> dict:
        act = get(config, "hidden_act", self, default="gelu")
        if act not in _IMPORTED:
            raise refuse_config(self, "hidden_act", act, "lmforge's GELU is the tanh approximation (gelu_new)")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise refuse_config(self, "position_embedding_type", config["position_embedding_type"],
                                "lmforge's BERT has absolute learned positions")
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise refuse_config(self, "is_decoder", True, "lmforge's BERT is an encoder")
        d = int(get(config, "hidden_size", self))
        return dict(
            family="encoder", n_encoder_layers=int(get(config, "num_hidden_layers", self)), n_decoder_layers=0,
            d_model=d, n_heads=int(get(config, "num_attention_heads", self)),
            d_ff=int(get(config, "intermediate_size", self)), vocab_size=int(get(config, "vocab_size", self)),
            context=int(get(config, "max_position_embeddings", self)), mlp=_IMPORTED[act], norm="layernorm",
            positions="learned", bias=True, tied_embeddings=True, final_norm=False, embedding_norm=True,
            mlm_head=True, pooler=False, n_token_types=int(get(config, "type_vocab_size", self, default=2)),
            norm_eps=float(get(config, "layer_norm_eps", self, default=1e-12)),
        )

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        # tied copies, the pretraining checkpoint's pooler and next-sentence head, position-id buffers
        return name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                        "bert.embeddings.position_ids") or name.startswith(("bert.pooler.", "cls.seq_relationship."))
