"""Memory to train a model (ZeRO, Korthikanti); storing it is test_storage.py."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import UserError
from lmforge.plan.memory import (
    MARGIN_FIXED_BYTES,
    OPTIMIZERS,
    TRAIN_PRECISIONS,
    compare_strategies,
    least_sharding,
    model_state_bytes_per_gpu,
    reduction_limit,
    rule_of_thumb,
    training_bytes_per_param,
    training_memory,
    zero3_gpus_needed,
)
from lmforge.plan.specs import ModelSpec
from tests.plan.reference_specs import LLAMA2_7B, small

GiB = 2**30


SPECS = [
    small(),
    LLAMA2_7B.with_(n_decoder_layers=2, n_kv_heads=8),
    ModelSpec(
        family="encoder-decoder",
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_model=128,
        n_heads=4,
        vocab_size=500,
        context=128,
        positions="relative",
        norm="rmsnorm",
        bias=False,
    ),
    ModelSpec(
        family="encoder",
        n_encoder_layers=2,
        n_decoder_layers=0,
        d_model=128,
        n_heads=4,
        vocab_size=500,
        context=128,
        mlm_head=True,
        n_token_types=2,
        embedding_norm=True,
    ),
]


# ---- ZeRO ---------------------------------------------------------------------------


def test_zero_figure1():
    """Rajbhandari et al. 2020 (ZeRO), Figure 1: 7.5B params, N_d = 64, K = 12:
    DDP 120 GB; stage 1 31.4 (= 30 + 1.406); stage 2 16.6 (= 15 + 1.64); stage 3 1.9 (= 1.875)."""
    expected = {"ddp": 120e9, "zero1": 30e9 + 1.40625e9, "zero2": 15e9 + 1.640625e9, "zero3": 1.875e9}
    printed = {"ddp": 120.0, "zero1": 31.4, "zero2": 16.6, "zero3": 1.9}
    for strategy, value in expected.items():
        got = model_state_bytes_per_gpu(7.5e9, strategy, 64).total
        assert got == pytest.approx(value, rel=1e-12)
        assert round(got / 1e9, 1) == printed[strategy]


def test_zero_stage_terms():
    """ZeRO Sec. 5: stage 1 4P + 12P/N, stage 2 2P + 14P/N, stage 3 16P/N (mixed AdamW)."""
    p, n = 1e9, 8
    z1 = model_state_bytes_per_gpu(p, "zero1", n)
    assert (z1.weights, z1.gradients, z1.optimizer_states + z1.master_weights) == (2e9, 2e9, 12e9 / 8)
    z2 = model_state_bytes_per_gpu(p, "zero2", n)
    assert (z2.weights, z2.gradients, z2.optimizer_states + z2.master_weights) == (2e9, 2e9 / 8, 12e9 / 8)
    assert model_state_bytes_per_gpu(p, "zero3", n).weights == 2e9 / 8


def test_reductions_and_limits():
    """ZeRO Figure 1 / Sec. 5: up to 4x (stage 1), 8x (stage 2), N_d x (stage 3), mixed AdamW."""
    assert reduction_limit("zero1") == 4.0
    assert reduction_limit("zero2") == 8.0
    assert reduction_limit("zero3") is None
    assert reduction_limit("ddp") == 1.0
    assert model_state_bytes_per_gpu(7.5e9, "zero3", 64).reduction_vs_ddp == pytest.approx(64)
    assert model_state_bytes_per_gpu(7.5e9, "zero1", 64).reduction_vs_ddp == pytest.approx(120 / 31.40625)
    assert model_state_bytes_per_gpu(7.5e9, "zero2", 10**6).reduction_vs_ddp == pytest.approx(8, rel=1e-4)


def test_bytes_per_param():
    """ZeRO Sec. 3.1: mixed AdamW 2 + 2 + 12 = 16 bytes/param (K = 12)."""
    mixed = training_bytes_per_param("bf16", "adamw")
    assert (mixed.weights, mixed.gradients, mixed.optimizer_states + mixed.master_weights) == (2, 2, 12)
    assert mixed.total == 16
    assert training_bytes_per_param("fp16", "adamw").total == 16
    fp32 = training_bytes_per_param("fp32", "adamw")
    assert (fp32.weights, fp32.gradients, fp32.optimizer_states, fp32.master_weights) == (4, 4, 8, 0)
    assert training_bytes_per_param("bf16", "sgd").total == 12
    assert training_bytes_per_param("fp32", "sgd").total == 12
    # bitsandbytes block-wise 8-bit Adam: 1 + 1 bytes + two fp32 absmax per 2048 values.
    assert training_bytes_per_param("bf16", "adam8bit").optimizer_states == 2 + 8 / 2048
    assert json.dumps(mixed.to_dict())


def test_offload_moves_optimizer_to_cpu():
    """ZeRO-Offload: optimizer states + fp32 master weights (12P, sharded) in CPU memory."""
    got = model_state_bytes_per_gpu(1e9, "zero2", 4, offload_optimizer=True)
    assert got.optimizer_states == got.master_weights == 0
    assert got.cpu_offload == pytest.approx(12e9 / 4)
    assert got.total == pytest.approx(2e9 + 2e9 / 4)


# ---- training a spec ---------------------------------------------------------------------


def test_training_memory_model_states_and_margin():
    """DDP holds 16 bytes/param (ZeRO Sec. 3.1); the margin is 10% of the rest + 1 GiB."""
    spec = LLAMA2_7B
    p = 6_738_415_616
    got = training_memory(spec, seq_len=1024, recompute="selective")
    assert (got.weights, got.gradients, got.master_weights, got.optimizer_states) == (2 * p, 2 * p, 4 * p, 8 * p)
    assert got.model_states == 16 * p
    rest = got.model_states + got.activations
    assert got.margin == math.ceil(0.1 * rest) + MARGIN_FIXED_BYTES == math.ceil(0.1 * rest) + GiB
    assert got.total == rest + got.margin
    bare = training_memory(spec, seq_len=1024, margin_fraction=0.0, margin_fixed_bytes=0)
    assert bare.total == bare.model_states + bare.activations
    assert json.dumps(got.to_dict())


def test_zero3_sharding_and_gathered_buffer():
    """zero3 over 8 GPUs: ceil(16P / 8) model states; gathered buffer = 2 Llama layers in bf16:
    2 bytes * 2 * (4*4096^2 + 3*4096*11008 + 2*4096) = 2 * 2 * 202,383,360 = 809,533,440."""
    spec = LLAMA2_7B
    got = training_memory(spec, seq_len=1024, strategy="zero3", n_gpus=8)
    assert got.model_states == 16 * 6_738_415_616 // 8
    assert got.gathered_params == 809_533_440
    assert got.reduction_vs_ddp == pytest.approx(8)
    assert training_memory(spec, seq_len=1024, strategy="zero3", n_gpus=1).gathered_params == 0


def test_compare_strategies_and_offload():
    spec = LLAMA2_7B
    rows = compare_strategies(spec, n_gpus=8, seq_len=2048, recompute="selective")
    assert [r.strategy for r in rows] == ["ddp", "zero1", "zero2", "zero3"]
    assert [r.reduction_limit for r in rows] == [1.0, 4.0, 8.0, None]
    totals = [r.total for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert rows[1].reduction_vs_ddp == pytest.approx(16 / (4 + 12 / 8))
    single = compare_strategies(spec, n_gpus=1, seq_len=2048, offload_optimizer=True)
    assert single[0].strategy == "single" and not single[0].offload_optimizer
    assert single[3].offload_optimizer and single[3].cpu_offload == 12 * 6_738_415_616


def test_least_sharding_and_gpus_needed():
    """The first strategy that fits; zero3 + offload last; None when nothing fits."""
    spec = LLAMA2_7B
    kw = {"n_gpus": 8, "seq_len": 2048, "recompute": "selective"}
    rows = {r.strategy: r.total for r in compare_strategies(spec, **kw)}
    assert least_sharding(spec, rows["ddp"], **kw) == "ddp"
    assert least_sharding(spec, rows["ddp"] - 1, **kw) == "zero1"
    assert least_sharding(spec, rows["zero2"], **kw) == "zero2"
    assert least_sharding(spec, rows["zero3"], **kw) == "zero3"
    offload = training_memory(spec, strategy="zero3", offload_optimizer=True, **kw).total
    assert least_sharding(spec, offload, **kw) == "zero3+offload"
    assert least_sharding(spec, offload - 1, **kw) is None
    kw1 = {"seq_len": 2048, "recompute": "full"}
    n = zero3_gpus_needed(spec, 24 * GiB, **kw1)
    assert n is not None and n > 1
    assert training_memory(spec, strategy="zero3", n_gpus=n, **kw1).total <= 24 * GiB
    assert training_memory(spec, strategy="zero3", n_gpus=n - 1, **kw1).total > 24 * GiB
    assert zero3_gpus_needed(spec, 2 * GiB, **kw1) is None  # the margin alone is 1 GiB + activations


def test_rule_of_thumb():
    """Folklore: 1B params -> 4 GB to store in fp32, ~80 GB to train; accounted model states 16 GB."""
    got = rule_of_thumb(1e9)
    assert (got.rule_store_bytes, got.rule_train_bytes, got.store_fp32_bytes) == (4e9, 80e9, 4e9)
    assert got.model_state_bytes == 16e9 and got.accounted_train_bytes is None
    memory = training_memory(small(), seq_len=64)
    assert rule_of_thumb(1e9, memory).accounted_train_bytes == memory.total
    assert json.dumps(got.to_dict())


# ---- properties --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    strategy=st.sampled_from(["zero1", "zero2", "zero3"]),
    precision=st.sampled_from(TRAIN_PRECISIONS),
    optimizer=st.sampled_from(OPTIMIZERS),
    recompute=st.sampled_from(["none", "selective", "full"]),
    offload=st.booleans(),
    n=st.integers(1, 5000),
    extra=st.integers(1, 5000),
)
def test_per_gpu_memory_never_grows_with_gpus(spec, strategy, precision, optimizer, recompute, offload, n, extra):
    kw = dict(
        strategy=strategy,
        precision=precision,
        optimizer=optimizer,
        recompute=recompute,
        offload_optimizer=offload,
        seq_len=64,
        micro_batch=2,
    )
    fewer = training_memory(spec, n_gpus=n, **kw)
    more = training_memory(spec, n_gpus=n + extra, **kw)
    assert more.total <= fewer.total
    assert more.model_states <= fewer.model_states


@settings(max_examples=80, deadline=None)
@given(
    p=st.floats(1e3, 1e13),
    k=st.floats(0.01, 100),
    strategy=st.sampled_from(["single", "zero1", "zero2", "zero3"]),
    n=st.integers(1, 4096),
    precision=st.sampled_from(TRAIN_PRECISIONS),
    optimizer=st.sampled_from(OPTIMIZERS),
    offload=st.booleans(),
)
def test_bare_counts_are_linear_in_params(p, k, strategy, n, precision, optimizer, offload):
    if strategy == "single":
        n, offload = 1, False
    a = model_state_bytes_per_gpu(p, strategy, n, precision, optimizer, offload)
    b = model_state_bytes_per_gpu(k * p, strategy, n, precision, optimizer, offload)
    for name in ("weights", "gradients", "optimizer_states", "master_weights", "total", "cpu_offload"):
        assert getattr(b, name) == pytest.approx(k * getattr(a, name), rel=1e-9, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=0, max_size=12))
def test_unknown_names_list_the_choices(name):
    spec = small()
    if name not in ("adamw", "sgd", "adam8bit"):
        with pytest.raises(UserError, match="choose one of adamw, sgd, adam8bit"):
            training_memory(spec, optimizer=name)
    if name not in ("single", "ddp", "zero1", "zero2", "zero3"):
        with pytest.raises(UserError, match="choose one of single, ddp, zero1, zero2, zero3"):
            training_memory(spec, strategy=name)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: training_memory(s, precision="int8"),
        lambda s: training_memory(s, recompute="some"),
        lambda s: training_memory(s, n_gpus=0),
        lambda s: training_memory(s, n_gpus=-4),
        lambda s: training_memory(s, n_gpus=2.0),
        lambda s: training_memory(s, strategy="single", n_gpus=2),
        lambda s: training_memory(s, strategy="ddp", n_gpus=2, offload_optimizer=True),
        lambda s: training_memory(s, strategy="zero2", offload_optimizer="yes"),
        lambda s: training_memory(s, micro_batch=0),
        lambda s: training_memory(s, seq_len=257),
        lambda s: training_memory(s, margin_fraction=float("nan")),
        lambda s: training_memory(s, margin_fraction=-0.1),
        lambda s: training_memory(s, margin_fraction=2.0),
        lambda s: model_state_bytes_per_gpu(0, "ddp", 1),
        lambda s: model_state_bytes_per_gpu(1e9, "zero4", 8),
        lambda s: model_state_bytes_per_gpu(1e9, "zero3", 0),
        lambda s: least_sharding(s, 0),
        lambda s: least_sharding(s, float("nan")),
        lambda s: rule_of_thumb(float("nan")),
    ],
)
def test_bad_inputs_raise_user_error(call):
    with pytest.raises(UserError):
        call(small())


def test_autocast_recipe_shards_fp32_weights_gradients_and_states_as_fsdp2_does():
    """lmforge's own training (fp32 weights = master, fp32 gradients, AdamW 8 B/param):
    ddp 16P; zero1 8P + 8P/N; zero2 and zero3 16P/N at rest, plus the gathered 16-bit
    weights: all of them under zero2 (2P: ZeRO-2's 2P + 14P/N with 4-byte gradients),
    the two largest units under zero3."""
    from lmforge.plan.memory import training_memory
    from lmforge.plan.presets import get_preset

    spec = get_preset("gpt2").spec
    p = 124_439_808
    ddp = training_memory(spec, strategy="ddp", n_gpus=8, recipe="autocast")
    assert (ddp.weights, ddp.gradients, ddp.optimizer_states, ddp.master_weights) == (4 * p, 4 * p, 8 * p, 0)
    z1 = training_memory(spec, strategy="zero1", n_gpus=8, recipe="autocast")
    assert (z1.weights, z1.gradients, z1.optimizer_states) == (4 * p, 4 * p, 8 * p // 8)
    z2 = training_memory(spec, strategy="zero2", n_gpus=8, recipe="autocast")
    assert (z2.weights, z2.gradients, z2.optimizer_states) == (4 * p // 8, 4 * p // 8, 8 * p // 8)
    assert z2.gathered_params == 2 * p  # bf16 copies kept from forward to backward
    z3 = training_memory(spec, strategy="zero3", n_gpus=8, recipe="autocast")
    assert z3.model_states == 16 * p // 8 and 0 < z3.gathered_params < z2.gathered_params
    master = training_memory(spec, strategy="zero2", n_gpus=8)  # the ZeRO paper's recipe is unchanged
    assert (master.weights, master.gradients) == (2 * p, -(-2 * p // 8))


def test_unknown_recipe_is_refused():
    from lmforge.errors import UserError
    from lmforge.plan.memory import training_memory
    from lmforge.plan.presets import get_preset

    with pytest.raises(UserError, match="recipe"):
        training_memory(get_preset("gpt2").spec, recipe="apex")
