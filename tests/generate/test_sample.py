"""The simple sampler: greedy, seeded, eos, top-k, context cropping, argument checks."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import UserError
from lmforge.generate.sample import sample
from lmforge.models import build_model
from lmforge.plan.presets import get_preset

SPEC = get_preset("tiny-llama").spec.with_(n_decoder_layers=2, d_model=64, d_ff=128, vocab_size=50, context=16)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(SPEC)
    with torch.no_grad():  # sharper than at init, so sampling and greedy visibly differ
        m.lm_head.weight.mul_(40)
    return m


def _greedy_reference(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-SPEC.context :]]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_greedy_is_deterministic_and_is_argmax(model):
    prompt = [3, 1, 4]
    out = sample(model, prompt, 30, temperature=0)  # 33 ids > context 16: crops
    assert len(out) == 30
    assert out == sample(model, prompt, 30, temperature=0, seed=123)
    assert out == _greedy_reference(model, prompt, 30)


def test_seed_reproducible_and_seeds_differ(model):
    a = sample(model, [1, 2], 20, temperature=1.0, top_k=None, seed=7)
    assert a == sample(model, [1, 2], 20, temperature=1.0, top_k=None, seed=7)
    assert a != sample(model, [1, 2], 20, temperature=1.0, top_k=None, seed=8)
    assert a != sample(model, [1, 2], 20, temperature=0)
    assert all(0 <= t < SPEC.vocab_size for t in a)


def test_sampling_leaves_global_rng_and_mode_alone(model):
    model.train()
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    sample(model, [1], 5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert model.training
    model.eval()


def test_top_k_one_equals_greedy(model):
    greedy = sample(model, [9, 9], 15, temperature=0)
    for seed in range(3):
        assert sample(model, [9, 9], 15, temperature=1.5, top_k=1, seed=seed) == greedy


def test_top_k_limits_the_choices(model):
    """With top_k = 3, every drawn token is among the 3 most likely at its step."""
    prompt = [4, 2]
    out = sample(model, prompt, 12, temperature=5.0, top_k=3, seed=0)
    ids = list(prompt)
    with torch.no_grad():
        for token in out:
            top3 = model(torch.tensor([ids[-SPEC.context :]]))[0, -1].topk(3).indices.tolist()
            assert token in top3
            ids.append(token)


def test_eos_stops_and_is_not_returned(model):
    greedy = sample(model, [5], 20, temperature=0)
    eos = greedy[4]
    first = greedy.index(eos)
    out = sample(model, [5], 20, temperature=0, eos_id=eos)
    assert out == greedy[:first]
    assert sample(model, [5], 0) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt_ids=[]), "prompt is empty"),
        (dict(prompt_ids=[50]), "outside the model's vocabulary"),
        (dict(prompt_ids=[-1]), "outside the model's vocabulary"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_bad_arguments_are_user_errors(model, kwargs, match):
    args = dict(prompt_ids=[1], max_new_tokens=3) | kwargs
    with pytest.raises(UserError, match=match):
        sample(model, args.pop("prompt_ids"), args.pop("max_new_tokens"), **args)


def test_cached_sampling_equals_recomputing_every_step():
    """The KV-cache path of sample() gives the ids of the no-cache sliding-window path."""
    torch.manual_seed(0)
    model = build_model(get_preset("tiny-llama").spec.with_(vocab_size=64)).double()
    prompt = [1, 5, 9, 2, 7]
    cached = sample(model, prompt, 30, temperature=0.9, top_k=20, seed=3)
    recomputed = sample(model, prompt, 300, temperature=0.9, top_k=20, seed=3)  # > context: no cache
    assert cached == recomputed[:30]
