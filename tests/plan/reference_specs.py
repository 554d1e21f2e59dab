"""Model shapes written out by hand from their papers and configs, shared by the tests.

Not taken from ``lmforge.plan.presets``, so the tests that use them check the planner's
arithmetic alone.
"""

from __future__ import annotations

from lmforge.plan.specs import ModelSpec

# Llama-2-7B: Touvron et al. 2023b; HF config meta-llama/Llama-2-7b-hf (6,738,415,616 params):
# 32 layers, d 4096, 32 heads, ff 11008, vocab 32000, context 4096, SwiGLU, RMSNorm, rotary,
# no bias, untied.
LLAMA2_7B = ModelSpec(
    family="decoder", n_decoder_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab_size=32000,
    context=4096, mlp="swiglu", norm="rmsnorm", positions="rotary", bias=False, tied_embeddings=False,
    name="llama-2-7b",
)
# GPT-3 175B: Brown et al. 2020, Table 2.1 (96 layers, d_model 12288, 96 heads of 128).
GPT3_175B = ModelSpec(family="decoder", n_decoder_layers=96, d_model=12288, n_heads=96, context=2048)
BERT_BASE = ModelSpec(
    family="encoder", n_decoder_layers=0, n_encoder_layers=12, vocab_size=30522, context=512,
    n_token_types=2, embedding_norm=True, final_norm=False, mlm_head=True,
)
T5_SMALL = ModelSpec(
    family="encoder-decoder", n_encoder_layers=6, n_decoder_layers=6, d_model=512, n_heads=8, d_ff=2048,
    vocab_size=32128, context=512, mlp="relu", norm="rmsnorm", positions="relative", bias=False,
)


def small(layers: int = 4, d: int = 256, heads: int = 4, context: int = 256, vocab: int = 1000) -> ModelSpec:
    """A tiny GPT-style decoder for fast checks."""
    return ModelSpec(n_decoder_layers=layers, d_model=d, n_heads=heads, vocab_size=vocab, context=context)
