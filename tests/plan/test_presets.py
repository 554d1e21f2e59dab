"""Model presets: exact counts of released configs, published counts of papers, lookup."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import UserError
from lmforge.plan.presets import PRESETS, Preset, get_preset, preset_names
from lmforge.plan.specs import ModelSpec, param_counts

# Exact parameter counts of released models. Each was checked against Hugging Face
# transformers (5.x) instantiated on the meta device from the config by hand (the
# ForCausalLM / ForMaskedLM / ForConditionalGeneration class), and where a model card
# prints one, against it; the tests themselves import neither torch nor transformers.
EXACT = {
    # GPT-2 (Radford et al. 2019, Table 2 prints 117M..1542M); openai-community/gpt2* configs.
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    # LLaMA-65B (Touvron et al. 2023a, Table 2: 65.2B): dim 8192, 80 layers, ffn 22016.
    "llama-65b": 65_285_660_672,
    # Llama 2 (Touvron et al. 2023b, Table 1): meta-llama/Llama-2-*-hf configs.
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    # Llama 3 8B (Dubey et al. 2024): meta-llama/Meta-Llama-3-8B config.
    "llama-3-8b": 8_030_261_248,
    # Pythia-160M (Biderman et al. 2023, Table 1): EleutherAI/pythia-160m.
    "pythia-160m": 162_322_944,
    # OPT-125M (Zhang et al. 2022, Table 1): facebook/opt-125m.
    "opt-125m": 125_239_296,
    # BERT as BertForMaskedLM (Devlin et al. 2019, Sec. 3: 110M / 340M).
    "bert-base": 109_514_298,
    "bert-large": 335_174_458,
    # T5 v1.0 (Raffel et al. 2020, Sec. 3.7: 60M / 220M / 770M): google-t5/t5-*.
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
    "t5-large": 737_668_096,
    # BART (Lewis et al. 2020): facebook/bart-base, facebook/bart-large.
    "bart-base": 139_420_416,
    "bart-large": 406_291_456,
    # BLOOM (BigScience 2022): the bigscience/bloom model card prints 176,247,271,424.
    "bloom-176b": 176_247_271_424,
}

# Rounded counts the papers publish; ours must be within 1%.
PUBLISHED = {
    "gpt3-175b": 175.0e9,  # Brown et al. 2020, Table 2.1
    "opt-175b": 175e9,  # Zhang et al. 2022, Table 1
    "gopher-280b": 280e9,  # Rae et al. 2021, Table 1
    "chinchilla-70b": 70e9,  # Hoffmann et al. 2022, Table 4
    "jurassic-1-178b": 178e9,  # Lieber et al. 2021, Table 1
    "mt-nlg-530b": 530e9,  # Smith et al. 2022, abstract and Sec. 2.2
    "bloomberggpt-50b": 50.6e9,  # Wu et al. 2023, Sec. 2.3
}

REQUIRED = [
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-2-7b", "llama-65b", "bert-base", "bert-large",
    "t5-small", "t5-base", "bart-base", "bart-large", "gpt3-175b", "opt-175b", "bloom-176b", "gopher-280b",
    "chinchilla-70b", "jurassic-1-178b", "mt-nlg-530b", "bloomberggpt-50b",
]


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_presets_match_released_configs(name):
    """Our count equals the released model's exact count (sources in EXACT's comments)."""
    preset = get_preset(name)
    assert preset.exact
    assert param_counts(preset.spec).total == EXACT[name]
    assert preset.published_params == EXACT[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_paper_presets_within_one_percent(name):
    """Counts from the published shapes land within 1% of the papers' rounded counts."""
    preset = get_preset(name)
    assert not preset.exact
    assert preset.published_params == PUBLISHED[name]
    assert abs(param_counts(preset.spec).total / PUBLISHED[name] - 1) < 0.01


def test_every_preset_is_tested_or_a_tiny_test_size():
    tested = set(EXACT) | set(PUBLISHED)
    assert set(preset_names()) - tested == {n for n in preset_names() if n.startswith("tiny-")}


def test_required_presets_exist():
    assert set(REQUIRED) <= set(preset_names())


def test_bert_base_model_with_pooler():
    """HF BertModel (pooler, no MLM head) for bert-base-uncased: 109,482,240 parameters."""
    spec = get_preset("bert-base").spec.with_(mlm_head=False, pooler=True)
    assert param_counts(spec).total == 109_482_240


def test_gpt3_training_compute():
    """GPT-3 175B: 3.14e23 training FLOPs (Brown et al. 2020, Table D.1) = 6 N x 300B tokens."""
    preset = get_preset("gpt3-175b")
    assert preset.train_tokens == 300e9
    assert 6 * preset.params * preset.train_tokens == pytest.approx(3.14e23, rel=0.005)


@pytest.mark.parametrize(
    "published, layers, heads, head_dim, d_model",
    [(44e6, 8, 16, 32, 512), (117e6, 12, 12, 64, 768), (417e6, 12, 12, 128, 1536),
     (1.4e9, 24, 16, 128, 2048), (7.1e9, 32, 32, 128, 4096)],
)
def test_xl_relative_reproduces_gopher_family(published, layers, heads, head_dim, d_model):
    """Gopher Table 1 (Rae et al. 2021): 44M..7.1B, i.e. 13 d^2 per layer + V d with the
    Transformer-XL position projection; standard 12 d^2 layers would be ~8% short."""
    spec = ModelSpec(
        n_decoder_layers=layers, n_heads=heads, head_dim=head_dim, d_model=d_model, vocab_size=32000,
        context=2048, norm="rmsnorm", positions="xl-relative",
    )
    assert abs(param_counts(spec).total / published - 1) < 0.02
    assert abs(param_counts(spec.with_(positions="rotary")).total / published - 1) > 0.05


def test_tiny_counts_by_hand():
    """Worked by hand (d=128, V=4096, T=256). tiny-gpt2: V d + T d + 4 (12 d^2 + 13 d)
    + final LayerNorm 2d. tiny-llama: untied 2 V d; per layer q and o 128x128, k and v
    128x64 (2 kv heads of 32), SwiGLU 3 x 128 x 352, two RMSNorms; final RMSNorm d."""
    d, V, T = 128, 4096, 256
    assert get_preset("tiny-gpt2").params == V * d + T * d + 4 * (12 * d * d + 13 * d) + 2 * d == 1_350_400
    llama_layer = d * (128 + 64 + 64 + 128) + 3 * d * 352 + 2 * d
    assert get_preset("tiny-llama").params == 2 * V * d + 4 * llama_layer + d == 1_787_008


def test_train_tokens_recorded():
    """Chinchilla 1.4T (Hoffmann et al. 2022, Table 4); Llama 2 2.0T (Table 1); BLOOM 366B."""
    assert get_preset("chinchilla-70b").train_tokens == 1.4e12
    assert get_preset("llama-2-7b").train_tokens == 2.0e12
    assert get_preset("bloom-176b").train_tokens == 366e9
    assert get_preset("chinchilla-70b").tokens_per_param == pytest.approx(20, rel=0.01)
    assert get_preset("gpt2").tokens_per_param is None


def test_presets_are_well_formed():
    for name, preset in PRESETS.items():
        assert isinstance(preset, Preset) and preset.name == name == name.lower()
        assert preset.spec.name == name
        assert preset.source and preset.published_params > 0
        assert preset.train_tokens is None or preset.train_tokens > 0
        assert name in PRESETS and isinstance(preset.spec, ModelSpec)


def test_lookup_is_case_insensitive():
    assert get_preset("GPT2-XL") is PRESETS["gpt2-xl"]
    assert get_preset(" Llama-2-7B ") is PRESETS["llama-2-7b"]


def test_unknown_preset_suggests_close_names():
    with pytest.raises(UserError, match="unknown model preset") as exc:
        get_preset("llama2-7b")
    assert "llama-2-7b" in str(exc.value)


def test_to_dict_is_json():
    out = json.loads(json.dumps(get_preset("t5-small").to_dict()))
    assert out["params"] == 60_506_624 and out["spec"]["family"] == "encoder-decoder"
    assert out["param_counts"]["total"] == 60_506_624
