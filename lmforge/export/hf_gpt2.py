"""lmforge's GPT-2 layout <-> transformers ``GPT2LMHeadModel`` (Radford et al. 2019).

Learned positions, pre-norm LayerNorm with biases, GELU (tanh, transformers' ``gelu_new``)
or ReLU, biases everywhere, fused q/k/v. transformers' GPT-2 uses ``Conv1D``, whose weight
is the transpose of ``nn.Linear``'s: (in, out); the fused ``c_attn`` has lmforge's
[q | k | v] columns in the same order.
"""

from __future__ import annotations

from lmforge.export.hf_arch import HFArch, SpecialIds, get, refuse_config, require, require_plain_heads
from lmforge.export.weights import copy, transpose
from lmforge.plan.specs import ModelSpec

ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu"}  # lmforge mlp -> transformers activation_function
_IMPORTED = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


class GPT2(HFArch):
    model_type = "gpt2"
    hf_class = "GPT2LMHeadModel"
    auto_class = "AutoModelForCausalLM"
    base_preset = "gpt2"

    def check(self, spec: ModelSpec) -> None:
        require(spec, self, "norm", ("layernorm",))
        require(spec, self, "mlp", tuple(ACTIVATIONS))
        require(spec, self, "bias", (True,))
        require(spec, self, "position_offset", (0,))
        require(spec, self, "embedding_norm", (False,))
        require(spec, self, "final_norm", (True,))
        require_plain_heads(spec, self)

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": spec.vocab_size, "n_positions": spec.context, "n_embd": spec.d_model,
            "n_layer": spec.n_decoder_layers, "n_head": spec.n_heads, "n_inner": spec.ffn,
            "activation_function": ACTIVATIONS[spec.mlp], "layer_norm_epsilon": spec.norm_eps,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "tie_word_embeddings": spec.tied_embeddings, "initializer_range": 0.02, "use_cache": True,
            "bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "pad_token_id": tokens.pad,
        }

    def rules(self, spec: ModelSpec) -> list:
        rules = [copy("tok_emb.weight", "transformer.wte.weight"), copy("pos_emb.weight", "transformer.wpe.weight")]
        for i in range(spec.n_decoder_layers):
            ours, theirs = f"blocks.{i}", f"transformer.h.{i}"
            for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
                rules += [copy(f"{ours}.{a}.{p}", f"{theirs}.{b}.{p}") for p in ("weight", "bias")]
            for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                         ("mlp.proj", "mlp.c_proj")):
                rules += [transpose(f"{ours}.{a}.weight", f"{theirs}.{b}.weight"),
                          copy(f"{ours}.{a}.bias", f"{theirs}.{b}.bias")]
        rules += [copy(f"final_norm.{p}", f"transformer.ln_f.{p}") for p in ("weight", "bias")]
        if not spec.tied_embeddings:
            rules.append(copy("lm_head.weight", "lm_head.weight"))
        return rules

    def spec_fields(self, config: dict) -> dict:
        act = get(config, "activation_function", self, default="gelu_new")
        if act not in _IMPORTED:
            raise refuse_config(self, "activation_function", act, "lmforge's GELU is the tanh approximation (gelu_new)")
        for key, value in (("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False),
                           ("scale_attn_weights", True)):
            if config.get(key, value) != value:
                raise refuse_config(self, key, config[key], "lmforge's attention has no such option")
        d = int(get(config, "n_embd", self))
        return dict(
            family="decoder", n_decoder_layers=int(get(config, "n_layer", self)), d_model=d,
            n_heads=int(get(config, "n_head", self)), d_ff=int(get(config, "n_inner", self, default=4 * d)),
            vocab_size=int(get(config, "vocab_size", self)), context=int(get(config, "n_positions", self)),
            mlp=_IMPORTED[act], norm="layernorm", positions="learned", bias=True,
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            norm_eps=float(get(config, "layer_norm_epsilon", self, default=1e-5)),
        )

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        if spec.tied_embeddings and name == "lm_head.weight":
            return True  # a tied copy of wte
        return name.endswith((".attn.bias", ".attn.masked_bias"))  # old checkpoints' causal-mask buffers
