"""lmforge's Llama layout <-> transformers ``LlamaForCausalLM`` (Touvron et al. 2023a/b).

Rotary positions in the "rotate half" layout (both sides: no permutation), RMSNorm,
SwiGLU (``hidden_act`` silu) or GEGLU (gelu_pytorch_tanh: a Llama MLP is always gated),
grouped-query attention (query head i reads kv head i // (h / g) on both sides), rotary
base and norm epsilon from the spec, biases on or off (``attention_bias`` and
``mlp_bias`` together), tied or untied head. lmforge fuses [q | k | v] and [gate | up]
in one matrix each; transformers keeps them apart.
"""

from __future__ import annotations

from lmforge.export.hf_arch import HFArch, SpecialIds, get, refuse_config, require
from lmforge.export.weights import copy, split
from lmforge.plan.specs import ModelSpec

ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}
_IMPORTED = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}


class Llama(HFArch):
    model_type = "llama"
    hf_class = "LlamaForCausalLM"
    auto_class = "AutoModelForCausalLM"
    base_preset = "llama-2-7b"

    def check(self, spec: ModelSpec) -> None:
        require(spec, self, "norm", ("rmsnorm",))
        require(spec, self, "mlp", tuple(ACTIVATIONS), "a Llama MLP is gated")
        require(spec, self, "embedding_norm", (False,))
        require(spec, self, "final_norm", (True,))

    def config(self, spec: ModelSpec, tokens: SpecialIds) -> dict:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": spec.vocab_size, "hidden_size": spec.d_model, "intermediate_size": spec.ffn,
            "num_hidden_layers": spec.n_decoder_layers, "num_attention_heads": spec.n_heads,
            "num_key_value_heads": spec.kv_heads, "head_dim": spec.d_head, "hidden_act": ACTIVATIONS[spec.mlp],
            "max_position_embeddings": spec.context, "rms_norm_eps": spec.norm_eps,
            "rope_theta": spec.rotary_base, "rope_parameters": {"rope_type": "default", "rope_theta": spec.rotary_base},
            "rope_scaling": None, "attention_bias": spec.bias, "mlp_bias": spec.bias, "attention_dropout": 0.0,
            "pretraining_tp": 1, "tie_word_embeddings": spec.tied_embeddings, "initializer_range": 0.02,
            "use_cache": True, "bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "pad_token_id": tokens.pad,
        }

    def rules(self, spec: ModelSpec) -> list:
        h, g, k, f = spec.n_heads, spec.kv_heads, spec.d_head, spec.ffn
        rules = [copy("tok_emb.weight", "model.embed_tokens.weight")]
        params = ("weight", "bias") if spec.bias else ("weight",)
        for i in range(spec.n_decoder_layers):
            ours, theirs = f"blocks.{i}", f"model.layers.{i}"
            rules += [copy(f"{ours}.norm1.weight", f"{theirs}.input_layernorm.weight"),
                      copy(f"{ours}.norm2.weight", f"{theirs}.post_attention_layernorm.weight")]
            for p in params:
                attn = tuple(f"{theirs}.self_attn.{n}_proj.{p}" for n in ("q", "k", "v"))
                rules += [split(f"{ours}.attn.qkv.{p}", attn, (h * k, g * k, g * k)),
                          copy(f"{ours}.attn.proj.{p}", f"{theirs}.self_attn.o_proj.{p}"),
                          split(f"{ours}.mlp.fc.{p}", (f"{theirs}.mlp.gate_proj.{p}", f"{theirs}.mlp.up_proj.{p}"),
                                (f, f)),
                          copy(f"{ours}.mlp.proj.{p}", f"{theirs}.mlp.down_proj.{p}")]
        rules.append(copy("final_norm.weight", "model.norm.weight"))
        if not spec.tied_embeddings:
            rules.append(copy("lm_head.weight", "lm_head.weight"))
        return rules

    def spec_fields(self, config: dict) -> dict:
        act = get(config, "hidden_act", self, default="silu")
        if act not in _IMPORTED:
            raise refuse_config(self, "hidden_act", act, "lmforge's gated MLPs are SwiGLU (silu) and GEGLU (tanh GELU)")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
        if kind not in ("default", None):
            raise refuse_config(self, "rope_type", kind, "lmforge's rotary positions are unscaled")
        theta = rope.get("rope_theta") if isinstance(rope, dict) else None
        theta = float(theta if theta is not None else config.get("rope_theta", 10_000.0))
        if config.get("attention_bias", False) != config.get("mlp_bias", False):
            raise refuse_config(self, "attention_bias", config.get("attention_bias"),
                                "lmforge's bias switch covers attention and MLP together (mlp_bias differs)")
        if int(config.get("pretraining_tp", 1)) != 1:
            raise refuse_config(self, "pretraining_tp", config["pretraining_tp"], "only 1 is exact")
        heads = int(get(config, "num_attention_heads", self))
        d = int(get(config, "hidden_size", self))
        return dict(
            family="decoder", n_decoder_layers=int(get(config, "num_hidden_layers", self)), d_model=d,
            n_heads=heads, n_kv_heads=int(get(config, "num_key_value_heads", self, default=heads)),
            head_dim=int(get(config, "head_dim", self, default=d // heads)),
            d_ff=int(get(config, "intermediate_size", self)), vocab_size=int(get(config, "vocab_size", self)),
            context=int(get(config, "max_position_embeddings", self)), mlp=_IMPORTED[act], norm="rmsnorm",
            positions="rotary", bias=bool(config.get("attention_bias", False)),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            norm_eps=float(get(config, "rms_norm_eps", self, default=1e-6)), rotary_base=theta,
        )

    def ignored(self, name: str, spec: ModelSpec) -> bool:
        if spec.tied_embeddings and name == "lm_head.weight":
            return True
        return name.endswith(".rotary_emb.inv_freq")  # old checkpoints' rotary buffer
