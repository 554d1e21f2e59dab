"""Named model presets: published architectures as `ModelSpec`s, with their sources.

Each preset records the parameter count its source publishes and whether our count
must match it exactly:

- ``exact=True``: the public config defines every weight; ``published_params`` is the
  exact count of the released model (Hugging Face ``transformers`` instantiated from
  that config, or the count the model card prints), and ``param_counts(spec).total``
  equals it to the parameter.
- ``exact=False``: the paper gives the shape but only a rounded count (GPT-3 "175.0B",
  Gopher "280B", ...); ours is within 1% of it.

``train_tokens`` is the number of pretraining tokens the source states (``None`` when
it does not state one). The ``tiny-*`` presets are lmforge's own CPU test sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import unknown_name
from lmforge.plan.specs import ModelSpec, param_counts


@dataclass(frozen=True)
class Preset:
    """A published (or lmforge test) architecture."""

    name: str
    spec: ModelSpec
    published_params: float  # the count the source publishes (exact when ``exact``)
    exact: bool  # the public config defines every weight: our count equals it
    train_tokens: float | None  # pretraining tokens the source states
    source: str  # paper / config, with section or table

    @property
    def params(self) -> int:
        """Our exact count of ``spec`` (see `lmforge.plan.specs`)."""
        return param_counts(self.spec).total

    @property
    def tokens_per_param(self) -> float | None:
        """Pretraining tokens per parameter (Chinchilla-optimal is about 20)."""
        return None if self.train_tokens is None else self.train_tokens / self.params

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "params": self.params,
            "published_params": self.published_params,
            "exact": self.exact,
            "train_tokens": self.train_tokens,
            "tokens_per_param": self.tokens_per_param,
            "source": self.source,
            "spec": self.spec.to_dict(),
            "param_counts": param_counts(self.spec).to_dict(),
        }


# ---- shared architecture templates ---------------------------------------------------

# GPT-2 (Radford et al. 2019): pre-LN, GELU, learned positions, biases, tied embeddings.
_GPT2 = dict(family="decoder", vocab_size=50257, context=1024)
# Llama (Touvron et al. 2023a, Sec. 2.2): RMSNorm, SwiGLU, rotary, no biases, untied head.
_LLAMA = dict(
    family="decoder", vocab_size=32000, mlp="swiglu", norm="rmsnorm", positions="rotary",
    bias=False, tied_embeddings=False,
)
# BERT (Devlin et al. 2019) as BertForMaskedLM: post-LN, embedding LayerNorm, token types,
# MLM head (dense + LayerNorm + output bias) tied to the input embedding, no pooler.
_BERT = dict(
    family="encoder", n_decoder_layers=0, vocab_size=30522, context=512, n_token_types=2,
    embedding_norm=True, final_norm=False, mlm_head=True,
)
# T5 v1.0 (Raffel et al. 2020, Sec. 2.1): RMSNorm without bias, ReLU, relative position
# buckets (32, first layer of each stack), no biases, tied embeddings, vocab 32128.
_T5 = dict(
    family="encoder-decoder", vocab_size=32128, context=512, mlp="relu", norm="rmsnorm",
    positions="relative", bias=False,
)
# BART (Lewis et al. 2020, Sec. 2.1): post-LN, GELU, learned positions with 2 offset rows,
# embedding LayerNorm in each stack, no final norm, shared tied embeddings.
_BART = dict(
    family="encoder-decoder", vocab_size=50265, context=1024, position_offset=2,
    embedding_norm=True, final_norm=False,
)
# BLOOM (BigScience 2022, Sec. 3.2): ALiBi, embedding LayerNorm, GELU, biases, tied.
_BLOOM = dict(family="decoder", context=2048, positions="alibi", embedding_norm=True)
# Gopher family (Rae et al. 2021, Sec. 3): RMSNorm, Transformer-XL relative positions,
# 32k SentencePiece vocabulary; the published counts are 13 d^2 per layer + V d, i.e. one
# (tied) embedding matrix and the XL position projection in every layer.
_GOPHER = dict(family="decoder", vocab_size=32000, context=2048, norm="rmsnorm", positions="xl-relative")


def _preset(name: str, spec: dict, published: float, exact: bool, tokens: float | None, source: str) -> Preset:
    return Preset(name, ModelSpec(name=name, **spec), published, exact, tokens, source)


_ALL: list[Preset] = [
    # ---- GPT-2: Radford et al. 2019, Table 2 (prints 117M/345M/762M/1542M, which leave out
    # ---- some embeddings); exact counts of GPT2LMHeadModel from the released configs.
    # openai-community/gpt2 config: n_layer 12, n_embd 768, n_head 12, n_positions 1024.
    _preset("gpt2", dict(_GPT2, n_decoder_layers=12, d_model=768, n_heads=12), 124_439_808, True, None,
            "Radford et al. 2019, Table 2 (117M); HF config openai-community/gpt2"),
    # openai-community/gpt2-medium config: n_layer 24, n_embd 1024, n_head 16.
    _preset("gpt2-medium", dict(_GPT2, n_decoder_layers=24, d_model=1024, n_heads=16), 354_823_168, True, None,
            "Radford et al. 2019, Table 2 (345M); HF config openai-community/gpt2-medium"),
    # openai-community/gpt2-large config: n_layer 36, n_embd 1280, n_head 20.
    _preset("gpt2-large", dict(_GPT2, n_decoder_layers=36, d_model=1280, n_heads=20), 774_030_080, True, None,
            "Radford et al. 2019, Table 2 (762M); HF config openai-community/gpt2-large"),
    # openai-community/gpt2-xl config: n_layer 48, n_embd 1600, n_head 25.
    _preset("gpt2-xl", dict(_GPT2, n_decoder_layers=48, d_model=1600, n_heads=25), 1_557_611_200, True, None,
            "Radford et al. 2019, Table 2 (1542M); HF config openai-community/gpt2-xl"),
    # ---- Llama ------------------------------------------------------------------------
    # LLaMA-65B: Touvron et al. 2023a, Table 2 (65.2B, 1.4T tokens); released params.json:
    # dim 8192, n_layers 80, n_heads 64, multiple_of 256 -> ffn 22016, vocab 32000.
    _preset("llama-65b", dict(_LLAMA, n_decoder_layers=80, d_model=8192, n_heads=64, d_ff=22016, context=2048),
            65_285_660_672, True, 1.4e12,
            "Touvron et al. 2023a (LLaMA), Table 2 (65.2B, 1.4T tokens); released params.json"),
    # Llama-2: Touvron et al. 2023b, Table 1 (2.0T tokens, 4k context); HF configs
    # meta-llama/Llama-2-{7b,13b,70b}-hf (70B: grouped-query attention with 8 kv heads).
    _preset("llama-2-7b", dict(_LLAMA, n_decoder_layers=32, d_model=4096, n_heads=32, d_ff=11008, context=4096),
            6_738_415_616, True, 2.0e12, "Touvron et al. 2023b (Llama 2), Table 1; HF config meta-llama/Llama-2-7b-hf"),
    _preset("llama-2-13b", dict(_LLAMA, n_decoder_layers=40, d_model=5120, n_heads=40, d_ff=13824, context=4096),
            13_015_864_320, True, 2.0e12,
            "Touvron et al. 2023b (Llama 2), Table 1; HF config meta-llama/Llama-2-13b-hf"),
    _preset("llama-2-70b",
            dict(_LLAMA, n_decoder_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672, context=4096),
            68_976_648_192, True, 2.0e12,
            "Touvron et al. 2023b (Llama 2), Table 1, GQA Sec. 2.2; HF config meta-llama/Llama-2-70b-hf"),
    # Llama 3 8B: Dubey et al. 2024 (Llama 3 herd), Table 3 (15T+ tokens, Sec. 3.1);
    # HF config meta-llama/Meta-Llama-3-8B: vocab 128256, 8 kv heads, ffn 14336, 8k context.
    _preset("llama-3-8b",
            dict(_LLAMA, n_decoder_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
                 vocab_size=128256, context=8192),
            8_030_261_248, True, 15e12, "Dubey et al. 2024 (Llama 3), Table 3; HF config meta-llama/Meta-Llama-3-8B"),
    # ---- other open decoders -------------------------------------------------------------
    # Pythia-160M: Biderman et al. 2023, Table 1; HF config EleutherAI/pythia-160m (GPT-NeoX:
    # partial rotary, untied head, vocab 50304); 143,000 steps x 2,097,152 tokens.
    _preset("pythia-160m",
            dict(family="decoder", n_decoder_layers=12, d_model=768, n_heads=12, vocab_size=50304, context=2048,
                 positions="rotary", tied_embeddings=False),
            162_322_944, True, 299_892_736_000,
            "Biderman et al. 2023 (Pythia), Table 1; HF config EleutherAI/pythia-160m"),
    # OPT-125M: Zhang et al. 2022, Table 1; HF config facebook/opt-125m (ReLU, learned
    # positions with 2 offset rows, vocab 50272, tied); ~180B tokens (Sec. 3.4).
    _preset("opt-125m",
            dict(family="decoder", n_decoder_layers=12, d_model=768, n_heads=12, vocab_size=50272, context=2048,
                 position_offset=2, mlp="relu"),
            125_239_296, True, 180e9, "Zhang et al. 2022 (OPT), Table 1, Sec. 3.4; HF config facebook/opt-125m"),
    # OPT-175B: Zhang et al. 2022, Table 1 (96 layers, 96 heads, d 12288), "175B".
    _preset("opt-175b",
            dict(family="decoder", n_decoder_layers=96, d_model=12288, n_heads=96, vocab_size=50272, context=2048,
                 position_offset=2, mlp="relu"),
            175e9, False, 180e9, "Zhang et al. 2022 (OPT), Table 1 and Sec. 3.4 (~180B tokens)"),
    # ---- encoders ---------------------------------------------------------------------------
    # BERT: Devlin et al. 2019, Sec. 3 (110M / 340M); HF configs google-bert/bert-base-uncased
    # and bert-large-uncased counted as BertForMaskedLM. Tokens: App. A.2, 1M steps x 256
    # sequences x 512 tokens = 128B (nominal: 90% of steps used length 128).
    _preset("bert-base", dict(_BERT, n_encoder_layers=12, d_model=768, n_heads=12), 109_514_298, True, 128e9,
            "Devlin et al. 2019 (BERT), Sec. 3 and App. A.2; HF config google-bert/bert-base-uncased (MaskedLM)"),
    _preset("bert-large", dict(_BERT, n_encoder_layers=24, d_model=1024, n_heads=16), 335_174_458, True, 128e9,
            "Devlin et al. 2019 (BERT), Sec. 3 and App. A.2; HF config google-bert/bert-large-uncased (MaskedLM)"),
    # ---- encoder-decoders ----------------------------------------------------------------
    # T5: Raffel et al. 2020, Sec. 3.7 (60M / 220M / 770M; ~1T pretraining tokens:
    # 1M steps x 2^11 sequences x 512); HF configs google-t5/t5-{small,base,large}.
    _preset("t5-small", dict(_T5, n_encoder_layers=6, n_decoder_layers=6, d_model=512, n_heads=8, d_ff=2048),
            60_506_624, True, 1e12, "Raffel et al. 2020 (T5), Sec. 3.7; HF config google-t5/t5-small"),
    _preset("t5-base", dict(_T5, n_encoder_layers=12, n_decoder_layers=12, d_model=768, n_heads=12, d_ff=3072),
            222_903_552, True, 1e12, "Raffel et al. 2020 (T5), Sec. 3.7; HF config google-t5/t5-base"),
    _preset("t5-large", dict(_T5, n_encoder_layers=24, n_decoder_layers=24, d_model=1024, n_heads=16, d_ff=4096),
            737_668_096, True, 1e12, "Raffel et al. 2020 (T5), Sec. 3.7; HF config google-t5/t5-large"),
    # BART: Lewis et al. 2020, Sec. 2.1 and 5.1 (6+6 / 12+12 layers); HF configs
    # facebook/bart-base and bart-large counted as BartForConditionalGeneration.
    _preset("bart-base", dict(_BART, n_encoder_layers=6, n_decoder_layers=6, d_model=768, n_heads=12),
            139_420_416, True, None, "Lewis et al. 2020 (BART), Sec. 2.1; HF config facebook/bart-base"),
    _preset("bart-large", dict(_BART, n_encoder_layers=12, n_decoder_layers=12, d_model=1024, n_heads=16),
            406_291_456, True, None, "Lewis et al. 2020 (BART), Sec. 2.1 and 5.1; HF config facebook/bart-large"),
    # ---- large published decoders ----------------------------------------------------------
    # GPT-3 175B: Brown et al. 2020, Table 2.1 (96 layers, d 12288, 96 heads x 128, context
    # 2048, "175.0B"), Sec. 2.2 (300B tokens); GPT-2 architecture and vocabulary.
    _preset("gpt3-175b", dict(_GPT2, n_decoder_layers=96, d_model=12288, n_heads=96, context=2048),
            175.0e9, False, 300e9, "Brown et al. 2020 (GPT-3), Table 2.1 and Sec. 2.2"),
    # BLOOM-176B: BigScience 2022, Table 3 (70 layers, 112 heads, d 14336, vocab 250880) and
    # Sec. 3.5 (366B tokens); exact count on the bigscience/bloom model card.
    _preset("bloom-176b", dict(_BLOOM, n_decoder_layers=70, d_model=14336, n_heads=112, vocab_size=250880),
            176_247_271_424, True, 366e9,
            "BigScience 2022 (BLOOM), Table 3, Sec. 3.5; HF model card bigscience/bloom (176,247,271,424)"),
    # Gopher 280B: Rae et al. 2021, Table 1 (80 layers, 128 heads x 128, d 16384) and
    # Sec. 3 (300B tokens).
    _preset("gopher-280b", dict(_GOPHER, n_decoder_layers=80, d_model=16384, n_heads=128), 280e9, False, 300e9,
            "Rae et al. 2021 (Gopher), Table 1 and Sec. 3"),
    # Chinchilla 70B: Hoffmann et al. 2022, Table 4 (80 layers, 64 heads x 128, d 8192,
    # 1.4T tokens); Gopher architecture.
    _preset("chinchilla-70b", dict(_GOPHER, n_decoder_layers=80, d_model=8192, n_heads=64), 70e9, False, 1.4e12,
            "Hoffmann et al. 2022 (Chinchilla), Table 4"),
    # Jurassic-1 Jumbo: Lieber et al. 2021, Table 1 (76 layers, d 13824, 96 heads x 144,
    # 256K vocabulary, 2048 context), Sec. 3 (300B tokens); GPT-3-style otherwise.
    _preset("jurassic-1-178b",
            dict(family="decoder", n_decoder_layers=76, d_model=13824, n_heads=96, vocab_size=256000, context=2048),
            178e9, False, 300e9, "Lieber et al. 2021 (Jurassic-1), Table 1 and Sec. 3"),
    # MT-NLG 530B: Smith et al. 2022, Sec. 2.2 (105 layers, d 20480, 128 heads, 2048 context,
    # GPT-2 vocabulary) and Sec. 3.1 (270B training tokens).
    _preset("mt-nlg-530b", dict(_GPT2, n_decoder_layers=105, d_model=20480, n_heads=128, context=2048),
            530e9, False, 270e9, "Smith et al. 2022 (MT-NLG), Sec. 2.2 and 3.1"),
    # BloombergGPT: Wu et al. 2023, Sec. 2.3 (70 layers, 40 heads, d 7680, vocab 131072,
    # BLOOM architecture, 50.6B) and Sec. 2.4 (569B tokens).
    _preset("bloomberggpt-50b", dict(_BLOOM, n_decoder_layers=70, d_model=7680, n_heads=40, vocab_size=131072),
            50.6e9, False, 569e9, "Wu et al. 2023 (BloombergGPT), Sec. 2.3-2.4"),
    # ---- lmforge test sizes (no publication; counts computed by hand in the tests) -------------
    _preset("tiny-gpt2", dict(family="decoder", n_decoder_layers=4, d_model=128, n_heads=4, vocab_size=4096,
                              context=256), 1_350_400, True, None, "lmforge CPU test size, GPT-2 layout"),
    _preset("tiny-llama", dict(_LLAMA, n_decoder_layers=4, d_model=128, n_heads=4, n_kv_heads=2, d_ff=352,
                               vocab_size=4096, context=256), 1_787_008, True, None,
            "lmforge CPU test size, Llama layout with grouped-query attention"),
    _preset("tiny-bert", dict(_BERT, n_encoder_layers=2, d_model=128, n_heads=4, vocab_size=4096, context=256),
            974_976, True, None, "lmforge CPU test size, BERT (MLM) layout"),
    _preset("tiny-t5", dict(_T5, n_encoder_layers=2, n_decoder_layers=2, d_model=128, n_heads=4, d_ff=512,
                            vocab_size=4096, context=256), 1_443_584, True, None, "lmforge CPU test size, T5 layout"),
    # V d 524,288 + 2 x 258 x 128 positions 66,048 + 2 embedding norms 512 + 2 encoder layers
    # 2 x 198,272 + 2 decoder layers 2 x 264,576 = 1,516,544 (hand count, bart-base layout).
    _preset("tiny-bart", dict(_BART, n_encoder_layers=2, n_decoder_layers=2, d_model=128, n_heads=4, vocab_size=4096,
                              context=256), 1_516_544, True, None, "lmforge CPU test size, BART layout"),
]

PRESETS: dict[str, Preset] = {p.name: p for p in _ALL}


def preset_names() -> list[str]:
    """All preset names, in catalog order (small to large within each family)."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive); UserError suggesting close names."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise unknown_name("model preset", str(name), PRESETS)
    return PRESETS[key]
