"""Cost of serving a model: inference and hosting (lmforge.plan.serving)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.serving import hosting_cost, inference_cost, sum_of_max
from tests.plan.reference_specs import BERT_BASE, LLAMA2_7B, T5_SMALL

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
        inference_cost(LLAMA2_7B, "H100"),
        inference_cost(BERT_BASE, "A10G", prompt_tokens=64),
        hosting_cost(T5_SMALL, "L4"),
    ]
    for r in results:
        d = json.loads(json.dumps(r.to_dict()))
        assert d["price_per_hour"] > 0


@pytest.mark.parametrize(
    "call",
    [
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
