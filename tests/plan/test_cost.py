"""Cost of pretraining and fine-tuning, full or LoRA (lmforge.plan.cost)."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import UserError
from lmforge.plan.cost import (
    lora_params,
    lora_params_estimate,
    pretraining_cost,
    pretraining_cost_for,
    tuning_cost,
)
from lmforge.plan.hardware import Cluster, get_gpu
from tests.plan.reference_specs import GPT3_175B, LLAMA2_7B, T5_SMALL

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


def test_pretraining_cost_by_hand():
    """1e23 FLOP / (64 * 989e12 * 0.4) = 3.9497e6 s = 45.71 days; * 64 / 3600 = 70,217 GPU-hours; * $2.50."""
    cost = pretraining_cost(1e23, "64xH100", 0.4)
    assert cost.wall_seconds == pytest.approx(3.9497e6, rel=1e-4)
    assert cost.wall_days == pytest.approx(45.71, rel=1e-3)
    assert cost.gpu_hours == pytest.approx(70216.8, rel=1e-5)
    assert cost.price_is_example and cost.price_per_hour == 2.5
    assert cost.dollars == pytest.approx(70216.8 * 2.5, rel=1e-5)
    own = pretraining_cost(1e23, "64xH100", 0.4, price_per_hour=3.0)
    assert not own.price_is_example and own.dollars == pytest.approx(70216.8 * 3.0, rel=1e-5)
    json.dumps(own.to_dict())


@pytest.mark.parametrize(
    "args", [(0, "8xH100"), (1e23, "8xH100", 1.5), (1e23, "8xH100", 0.4, -1.0), (1e36, "8xH100"), (1e23, "8xNOPE")]
)
def test_pretraining_cost_rejects_bad_input(args):
    with pytest.raises(UserError):
        pretraining_cost(*args)


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


# ---- results and validation ------------------------------------------------------------


def test_results_are_json_serializable():
    results = [
        pretraining_cost(1e21, "8xH100"),
        tuning_cost(LLAMA2_7B, 1e8, "8xH100", method="lora"),
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
    ],
)
def test_bad_inputs_raise_user_error(call):
    with pytest.raises(UserError):
        call()
