"""Cost of pretraining, fine-tuning, inference and hosting (lmforge.plan.cost)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.cost import (
    hosting_cost,
    inference_cost,
    lora_params,
    lora_params_estimate,
    pretraining_cost,
    pretraining_cost_for,
    sum_of_max,
    tuning_cost,
)
from lmforge.plan.hardware import Cluster, get_gpu
from lmforge.plan.specs import ModelSpec

# Shapes written out here (not taken from presets) so these tests check cost.py alone.
# Llama-2-7B: Touvron et al. 2023b; HF config meta-llama/Llama-2-7b-hf (6,738,415,616 params).
LLAMA2_7B = ModelSpec(
    family="decoder", n_decoder_layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab_size=32000,
    context=4096, mlp="swiglu", norm="rmsnorm", positions="rotary", bias=False, tied_embeddings=False,
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


# ---- pretraining -----------------------------------------------------------------------


def test_pretraining_cost_gopher_budget_on_1000_a100():
    """5.76e23 FLOP (Gopher's budget, Hoffmann et al. 2022, Sec. 3) on 1000 A100s at MFU 0.4.

    By hand: 312e12 x 0.4 = 1.248e14 FLOP/s per GPU (A100 data sheet bf16 dense);
    5.76e23 / 1.248e14 = 4.6154e9 GPU-seconds = 1,282,051 GPU-hours; over 1000 GPUs
    4.6154e6 s = 53.42 days; at $2.00/GPU-hour $2,564,103.
    """
    cost = pretraining_cost(5.76e23, "1000xA100", mfu=0.4, price_per_hour=2.0)
    assert cost.n_gpus == 1000
    assert cost.gpu_hours == pytest.approx(1_282_051.28, rel=1e-6)
    assert cost.wall_seconds == pytest.approx(4.6153846e6, rel=1e-6)
    assert cost.wall_days == pytest.approx(53.418803, rel=1e-6)
    assert cost.dollars == pytest.approx(2_564_102.56, rel=1e-6)
    assert cost.price_per_hour == 2.0 and cost.price_is_example is False


def test_pretraining_price_defaults_to_flagged_example():
    cost = pretraining_cost(1e21, Cluster(get_gpu("A100-80GB"), 8))
    assert cost.price_is_example is True
    assert cost.price_per_hour == get_gpu("A100-80GB").example_price_per_hour
    assert "EXAMPLE" in cost.note


def test_pretraining_more_gpus_shorter_same_dollars():
    one = pretraining_cost(1e22, "8xH100", price_per_hour=3.0)
    two = pretraining_cost(1e22, "16xH100", price_per_hour=3.0)
    assert two.wall_seconds == pytest.approx(one.wall_seconds / 2)
    assert two.dollars == pytest.approx(one.dollars)
    assert pretraining_cost(1e22, "8xH100", mfu=0.2).gpu_hours == pytest.approx(2 * one.gpu_hours)


def test_pretraining_cost_for_uses_6nd():
    """Chinchilla: 70B parameters on 1.4T tokens (Hoffmann et al. 2022, Sec. 4): 6ND = 5.88e23."""
    cost = pretraining_cost_for(70e9, 1.4e12, "1000xA100", price_per_hour=2.0)
    assert cost.flops == pytest.approx(5.88e23)
    assert cost.n_params == 70e9 and cost.n_tokens == 1.4e12


# ---- fine-tuning -----------------------------------------------------------------------


def test_lora_params_gpt3_budget():
    """Hu et al. 2021 (LoRA), Sec. 7.1: an 18M budget on GPT-3 175B is r = 4 on W_q and W_v
    over 96 layers. By hand: 4 x 96 x 2 x (12288 + 12288) = 18,874,368."""
    n = lora_params(GPT3_175B, 4, "qv")
    assert n == 18_874_368
    assert n == pytest.approx(18e6, rel=0.05)


def test_lora_params_llama2_7b():
    """r = 8 on Llama-2-7B. qv: 8 x 32 x 2 x (4096 + 4096) = 4,194,304. All linears: per
    layer 4 x (4096 + 4096) attention + 3 x (4096 + 11008) SwiGLU = 78,080; x 32 x 8 =
    19,988,480 (the counts PEFT prints for these settings)."""
    assert lora_params(LLAMA2_7B, 8, "qv") == 4_194_304
    assert lora_params(LLAMA2_7B, 8, "all-linear") == 19_988_480


def test_lora_params_encoder_decoder_counts_cross_attention():
    """T5-small qv, r=1: 6 encoder self + 6 decoder self + 6 cross = 18 blocks x 2 x (512 + 512)."""
    assert lora_params(T5_SMALL, 1, "qv") == 18 * 2 * 1024


@pytest.mark.parametrize("spec", [LLAMA2_7B, GPT3_175B])
def test_lora_estimate_from_n_is_close(spec):
    from lmforge.plan.specs import param_counts

    n = param_counts(spec).total
    assert lora_params_estimate(n, 8, "qv") == pytest.approx(lora_params(spec, 8, "qv"), rel=0.1)


def test_lora_cheaper_than_full():
    """Frozen weights skip weight gradients: 4N + 6N_adapter vs 6N FLOPs per token."""
    full = tuning_cost(LLAMA2_7B, 1e9, "8xH100", method="full", price_per_hour=2.0)
    lora = tuning_cost(LLAMA2_7B, 1e9, "8xH100", method="lora", lora_rank=8, price_per_hour=2.0)
    n = 6_738_415_616
    assert full.flops_per_token == 6 * n
    assert lora.flops_per_token == 4 * n + 6 * 4_194_304
    assert lora.flops == pytest.approx(1e9 * (4 * n + 6 * 4_194_304))
    assert lora.dollars < full.dollars
    assert lora.dollars / full.dollars == pytest.approx(2 / 3, rel=0.01)
    assert lora.state_bytes < full.state_bytes and lora.memory_saving > 7


def test_lora_frozen_gpt3_weights_350gb():
    """Hu et al. 2021, Sec. 4.2: LoRA training of GPT-3 175B needs 350GB (the frozen fp16
    weights, 2 bytes x 175e9); ours adds 16 bytes per adapter parameter (r=4, qv: 18.9M)."""
    cost = tuning_cost(175e9, 1e6, "64xA100", method="lora", lora_rank=4, spec=GPT3_175B)
    assert cost.trainable_params == 18_874_368
    assert cost.state_bytes == 350e9 + 16 * 18_874_368
    assert cost.full_state_bytes == 16 * 175e9
    assert cost.trainable_params_estimated is False


def test_lora_without_spec_is_flagged_estimate():
    cost = tuning_cost(7e9, 1e8, "H100", method="lora")
    assert cost.trainable_params_estimated is True
    assert "estimated" in cost.note


# ---- inference -------------------------------------------------------------------------


def test_decode_7b_bf16_h100_batch1_memory_bound():
    """Pope et al. 2022: small-batch decode reads every weight per step. Llama-2-7B in bf16
    is 2 x 6,738,415,616 = 13,476,831,232 bytes; with one cached position (0.5 MiB:
    2 x 32 layers x 32 heads x 128 x 2 bytes) over 3.35e12 B/s (H100 SXM data sheet):
    (13,476,831,232 + 524,288) / 3.35e12 = 4.0231 ms per token."""
    r = inference_cost(LLAMA2_7B, "H100", batch=1, prompt_tokens=1, new_tokens=1, bandwidth_efficiency=1.0)
    assert r.weight_bytes == 13_476_831_232
    assert r.decode_step_memory_seconds == pytest.approx(4.0231e-3, rel=1e-4)
    assert r.decode_bound == "memory"
    assert r.decode_step_compute_seconds < r.decode_step_memory_seconds / 50
    slow = inference_cost(LLAMA2_7B, "H100", batch=1, prompt_tokens=1, new_tokens=1, bandwidth_efficiency=0.8)
    assert slow.decode_seconds == pytest.approx(r.decode_seconds / 0.8)


def test_decode_large_batch_compute_bound():
    """Without shapes (no KV): per step max(2N bytes / BW, 2N x batch / (peak x MFU)).
    N = 6.74e9, batch 1024 on H100: compute 2 x 6.74e9 x 1024 / (989e12 x 0.4) = 34.89 ms
    against memory 13.48e9 / (3.35e12 x 0.8) = 5.03 ms: compute-bound."""
    r = inference_cost(6.74e9, "H100", batch=1024, prompt_tokens=128, new_tokens=16)
    assert r.decode_bound == "compute"
    assert r.decode_step_seconds == pytest.approx(2 * 6.74e9 * 1024 / (989e12 * 0.4), rel=1e-9)
    assert r.decode_step_memory_seconds == pytest.approx(13.48e9 / (3.35e12 * 0.8), rel=1e-9)


def test_prefill_compute_bound_and_prices():
    """Prefill 2N per token (Kaplan et al. 2020, Sec. 2.1) at bf16 peak x MFU; $/M tokens
    from the seconds each phase holds the GPU: at $2.50/h and 5.03 ms per output token,
    2.5 / 3600 x 5.0299e-3 x 1e6 = $3.493 per million output tokens."""
    r = inference_cost(6.74e9, "H100", batch=1, prompt_tokens=1000, new_tokens=100, price_per_hour=2.5)
    prefill = 1000 * 2 * 6.74e9 / (989e12 * 0.4)
    assert r.prefill_seconds == pytest.approx(prefill)
    assert r.input_tokens_per_second_per_gpu == pytest.approx(1000 / prefill)
    step = 2 * 6.74e9 / (3.35e12 * 0.8)
    assert r.output_tokens_per_second_per_gpu == pytest.approx(1 / step)
    assert r.dollars_per_million_output == pytest.approx(3.4930, rel=1e-4)
    assert r.dollars_per_million_input == pytest.approx(2.5 / 3600 * prefill / 1000 * 1e6)
    assert r.dollars_per_million_input < r.dollars_per_million_output
    assert r.price_is_example is False


def test_kv_cache_grows_decode_time():
    """Llama-2-7B caches 0.5 MiB per position in bf16; 512 + 256 positions = 384 MiB."""
    r = inference_cost(LLAMA2_7B, "H100", prompt_tokens=512, new_tokens=256)
    assert r.kv_cache_bytes == 768 * 2**19
    short = inference_cost(LLAMA2_7B, "H100", prompt_tokens=16, new_tokens=256)
    assert r.decode_seconds > short.decode_seconds


def test_model_too_big_for_one_gpu_spreads():
    """70B in bf16 = 140 GB > 80 GiB: two H100s (with the 20% margin: 168 GB < 171.8 GB)."""
    r = inference_cost(70e9, "H100", prompt_tokens=128, new_tokens=16)
    assert r.n_gpus == 2
    assert hosting_cost(70e9, "H100").gpus_per_replica == 2


def test_encoder_does_not_decode():
    r = inference_cost(BERT_BASE, "A10G", prompt_tokens=128)
    assert r.new_tokens == 0 and r.decode_bound == "none" and r.dollars_per_million_output is None
    with pytest.raises(UserError, match="does not generate"):
        inference_cost(BERT_BASE, "A10G", prompt_tokens=128, new_tokens=5)


def test_encoder_decoder_reads_only_decoder_weights():
    r = inference_cost(T5_SMALL, "H100", prompt_tokens=256, new_tokens=64, bandwidth_efficiency=1.0)
    assert r.decode_bound == "memory"
    # Decode reads less than all the weights (the encoder is skipped after prefill).
    assert r.decode_step_memory_seconds < r.weight_bytes / 3.35e12


def test_sequence_longer_than_context_rejected():
    with pytest.raises(UserError, match="context"):
        inference_cost(LLAMA2_7B, "H100", prompt_tokens=4000, new_tokens=200)


@settings(max_examples=200, deadline=None)
@given(
    m0=st.floats(0, 10), m1=st.floats(-1, 1), c0=st.floats(0, 10), c1=st.floats(-1, 1), n=st.integers(0, 60)
)
def test_sum_of_max_matches_loop(m0, m1, c0, c1, n):
    total, first = sum_of_max(m0, m1, c0, c1, n)
    steps = [(m0 + m1 * t, c0 + c1 * t) for t in range(n)]
    assert total == pytest.approx(sum(max(a, b) for a, b in steps), rel=1e-9, abs=1e-9)
    strictly = sum(a > b for a, b in steps)
    at_least = sum(a >= b for a, b in steps)
    assert strictly <= first <= at_least or math.isclose(m1, c1)


# ---- hosting ---------------------------------------------------------------------------


def test_hosting_gpus_rise_with_precision_bytes():
    """70B on H100 (80 GiB = 85.9 GB) with the 20% margin: fp32 336 GB -> 4, bf16 168 GB -> 2,
    int8 84 GB -> 1. At $2/h always on: 4 x 2 x 730 = $5,840 a month for fp32."""
    counts = {p: hosting_cost(70e9, "H100", precision=p, price_per_hour=2.0) for p in ("fp32", "bf16", "int8", "int4")}
    assert [counts[p].n_gpus for p in ("fp32", "bf16", "int8", "int4")] == [4, 2, 1, 1]
    assert counts["fp32"].dollars_per_month == pytest.approx(5840.0)
    assert counts["fp32"].dollars_per_year == pytest.approx(12 * 5840.0)


def test_hosting_kv_cache_and_replicas():
    """Llama-2-7B, batch 8 x 4096 tokens: KV 8 x 4096 x 0.5 MiB = 16 GiB."""
    one = hosting_cost(LLAMA2_7B, "H100", batch=8, context=4096)
    assert one.kv_cache_bytes == 16 * 2**30
    assert one.needed_bytes == math.ceil((13_476_831_232 + 16 * 2**30) * 1.2)
    assert one.gpus_per_replica == 1
    three = hosting_cost(LLAMA2_7B, "H100", batch=8, context=4096, replicas=3)
    assert three.n_gpus == 3 and three.dollars_per_month == pytest.approx(3 * one.dollars_per_month)
    big = hosting_cost(LLAMA2_7B, "L4", batch=64, context=4096)
    assert big.gpus_per_replica > 1


def test_hosting_part_time_is_cheaper():
    always = hosting_cost(7e9, "L4", price_per_hour=1.0)
    office = hosting_cost(7e9, "L4", price_per_hour=1.0, hours_per_month=200)
    assert office.dollars_per_month == pytest.approx(always.dollars_per_month * 200 / 730)


# ---- results and validation ------------------------------------------------------------


def test_results_are_json_serializable():
    results = [
        pretraining_cost(1e21, "8xH100"),
        tuning_cost(LLAMA2_7B, 1e8, "8xH100", method="lora"),
        inference_cost(LLAMA2_7B, "H100"),
        inference_cost(BERT_BASE, "A10G", prompt_tokens=64),
        hosting_cost(T5_SMALL, "L4"),
    ]
    for r in results:
        d = json.loads(json.dumps(r.to_dict()))
        assert d["price_per_hour"] > 0 if "price_per_hour" in d else d["compute"]["price_per_hour"] > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: pretraining_cost(0, "8xH100"),
        lambda: pretraining_cost(-1e20, "8xH100"),
        lambda: pretraining_cost(float("nan"), "8xH100"),
        lambda: pretraining_cost(float("inf"), "8xH100"),
        lambda: pretraining_cost(1e50, "8xH100"),
        lambda: pretraining_cost(1e21, "8xH100", mfu=0),
        lambda: pretraining_cost(1e21, "8xH100", mfu=40),
        lambda: pretraining_cost(1e21, "8xH100", price_per_hour=-2),
        lambda: pretraining_cost(1e21, "8xH1000"),
        lambda: pretraining_cost_for(0, 1e9, "H100"),
        lambda: tuning_cost(7e9, 1e9, "H100", method="qlora"),
        lambda: tuning_cost(7e9, 1e9, "H100", method="lora", lora_rank=0),
        lambda: tuning_cost(7e9, 1e9, "H100", method="lora", lora_targets="mlp"),
        lambda: tuning_cost(7e9, 0, "H100"),
        lambda: tuning_cost(None, 1e9, "H100"),
        lambda: inference_cost(7e9, "H100", precision="fp12"),
        lambda: inference_cost(7e9, "H100", batch=0),
        lambda: inference_cost(7e9, "H100", batch=1.5),
        lambda: inference_cost(7e9, "H100", prompt_tokens=0),
        lambda: inference_cost(7e9, "H100", new_tokens=-1),
        lambda: inference_cost(7e9, "H100", bandwidth_efficiency=1.5),
        lambda: inference_cost(7e9, "H100", mfu=float("nan")),
        lambda: inference_cost(0, "H100"),
        lambda: hosting_cost(7e9, "H100", precision="int3"),
        lambda: hosting_cost(7e9, "H100", replicas=0),
        lambda: hosting_cost(7e9, "H100", hours_per_month=1000),
        lambda: hosting_cost(LLAMA2_7B, "H100", context=10**6),
    ],
)
def test_bad_inputs_raise_user_error(call):
    with pytest.raises(UserError):
        call()
