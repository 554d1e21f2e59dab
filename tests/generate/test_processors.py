"""The logits processors against hand-computed distributions, the chain's order, the sampling
frequencies of the engine's one drawing path (chi-square), and the argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from lmforge.errors import UserError
from lmforge.generate.engine import draw
from lmforge.generate.processors import (
    ORDER,
    LogitsChain,
    MinP,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
)

INF = float("inf")


def _draw(chain: LogitsChain, logits: torch.Tensor, generated: torch.Tensor | None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 1) ids from the engine's drawing path, every row drawing with ``generator``."""
    tokens, _ = draw(chain, logits, generated, [generator] * logits.shape[0], list(range(logits.shape[0])))
    return torch.tensor(tokens).view(-1, 1)


def _next_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator):
    return _draw(LogitsChain.from_settings(temperature=temperature, top_k=top_k), logits, None, generator)


def _row(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([values], dtype=dtype)  # (1, V)


def _kept(filtered: torch.Tensor) -> list[int]:
    """Indices of the one row's entries that survived (finite)."""
    return torch.isfinite(filtered[0]).nonzero().flatten().tolist()


def _log(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float64).log()  # (1, V)


# --- repetition penalty (CTRL, Keskar et al. 2019, Sec. 4.1) ---


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0], [2.0, -1.0, 0.5, -3.0, 1.0]])  # (2, 5)
    generated = torch.tensor([[0, 1, 1, -1], [3, 4, 4, 4]])  # (2, 4); -1 (padding) is ignored
    out = RepetitionPenalty(2.0)(logits, generated)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0, 1.0], [2.0, -1.0, 0.5, -6.0, 0.5]]
    boosted = RepetitionPenalty(0.5)(logits[:1], generated[:1])  # < 1 makes repeats more likely
    assert boosted.tolist() == [[4.0, -0.5, 0.5, -3.0, 1.0]]
    assert torch.equal(RepetitionPenalty(2.0)(logits, None), logits)
    assert torch.equal(RepetitionPenalty(2.0)(logits, torch.zeros(2, 0, dtype=torch.long)), logits)


def test_repetition_penalty_lowers_every_nonzero_repeated_logit_and_nothing_else():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)  # (B, V)
    generated = torch.randint(0, 30, (4, 6))  # (B, T)
    out = RepetitionPenalty(1.3)(logits, generated)
    seen = torch.zeros(4, 30, dtype=torch.bool).scatter(1, generated, True)  # (B, V)
    assert (out[seen] < logits[seen]).all()
    assert torch.equal(out[~seen], logits[~seen])


# --- temperature ---


def test_temperature_divides_and_zero_keeps_the_first_argmax():
    assert Temperature(2.0)(_row([1.0, 2.0, 3.0])).tolist() == [[0.5, 1.0, 1.5]]
    assert Temperature(0)(_row([1.0, 2.0, 3.0])).tolist() == [[-INF, -INF, 3.0]]
    assert Temperature(0)(_row([3.0, 1.0, 3.0])).tolist() == [[3.0, -INF, -INF]]  # ties: the first, like argmax


def test_temperature_zero_is_argmax_in_the_sampler_without_a_draw():
    torch.manual_seed(1)
    logits = torch.randn(64, 50)  # (B, V)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    for chain in (LogitsChain.from_settings(temperature=0),
                  LogitsChain.from_settings(temperature=0, top_k=5, top_p=0.5, min_p=0.3)):
        assert chain.greedy
        ids = _draw(chain, logits, None, generator)  # (B, 1)
        assert torch.equal(ids, logits.argmax(-1, keepdim=True))
    assert torch.equal(generator.get_state(), state)  # greedy draws nothing
    # greedy with a repetition penalty: the argmax of the penalised logits
    generated = logits.argmax(-1, keepdim=True)  # (B, 1): penalise the current best
    chain = LogitsChain.from_settings(temperature=0, repetition_penalty=100.0)
    expected = RepetitionPenalty(100.0)(logits, generated).argmax(-1, keepdim=True)
    assert torch.equal(_draw(chain, logits, generated), expected)
    assert not torch.equal(expected, generated)


# --- top-k (ties with the k-th largest are kept) ---


def test_top_k_keeps_the_k_largest():
    assert TopK(2)(_row([1.0, 5.0, 3.0, 4.0, 2.0])).tolist() == [[-INF, 5.0, -INF, 4.0, -INF]]
    assert _kept(TopK(1)(_row([1.0, 5.0, 3.0]))) == [1]
    torch.manual_seed(2)
    logits = torch.randn(16, 100)  # (B, V), distinct values
    for k in (1, 3, 17, 99):
        out = TopK(k)(logits)
        assert (torch.isfinite(out).sum(-1) == k).all()
        assert torch.equal(torch.isfinite(out), logits >= logits.topk(k, -1).values[:, -1:])


def test_top_k_tie_rule_keeps_every_token_equal_to_the_kth_value():
    assert _kept(TopK(2)(_row([1.0, 3.0, 3.0, 2.0]))) == [1, 2]
    assert _kept(TopK(1)(_row([1.0, 3.0, 3.0, 2.0]))) == [1, 2]  # documented: ties at the cut survive
    assert _kept(TopK(2)(_row([4.0, 3.0, 3.0, 1.0]))) == [0, 1, 2]


def test_top_k_zero_or_at_least_the_vocabulary_is_off():
    logits = _row([1.0, 2.0, 3.0])
    assert torch.equal(TopK(0)(logits), logits)
    assert torch.equal(TopK(3)(logits), logits)
    assert torch.equal(TopK(1000)(logits), logits)


# --- top-p (Holtzman et al. 2020, Sec. 3.1) ---


@pytest.mark.parametrize(
    "p, kept",
    [
        (1e-9, [1]),  # always at least one
        (0.49, [1]),
        (0.5 + 1e-9, [1, 3]),  # 0.5 alone falls short of p; 0.5 + 0.3 reaches it
        (0.7, [1, 3]),
        (0.8 - 1e-9, [1, 3]),
        (0.8 + 1e-9, [0, 1, 3]),
        (0.96, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_smallest_prefix_reaching_p(p, kept):
    logits = _log([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2); cumulative .5 .8 .95 1
    assert _kept(TopP(p)(logits)) == kept


def test_top_p_agrees_with_a_brute_force_prefix_on_random_rows():
    torch.manual_seed(3)
    logits = torch.randn(32, 40, dtype=torch.float64) * 2  # (B, V)
    for p in (0.1, 0.5, 0.9, 0.99):
        out = TopP(p)(logits)
        for b in range(32):
            probs = sorted(torch.softmax(logits[b], -1).tolist(), reverse=True)
            n = next(i + 1 for i in range(40) if math.fsum(probs[: i + 1]) >= p)
            assert int(torch.isfinite(out[b]).sum()) == n


def test_top_p_widens_its_search_for_large_nuclei():
    """Rows whose nucleus holds < 256, a few thousand, and > 4096 of 20 000 tokens."""
    torch.manual_seed(6)
    logits = torch.randn(3, 20_000, dtype=torch.float64) * torch.tensor([[8.0], [3.0], [1.0]])  # (B, V)
    out = TopP(0.9)(logits)
    sizes = []
    for b in range(3):
        probs = np.sort(torch.softmax(logits[b], -1).numpy())[::-1]
        n = int(np.searchsorted(np.cumsum(probs), 0.9) + 1)  # first prefix whose sum reaches 0.9
        sizes.append(n)
        assert int(torch.isfinite(out[b]).sum()) == n
    assert sizes[0] < 256 < sizes[1] < 4096 < sizes[2]


def test_top_p_tie_rule_keeps_tokens_tied_with_the_last_kept():
    # 0.4 alone < 0.5; 0.4 + 0.25 reaches it; the other 0.25 is tied with the prefix's last token
    assert _kept(TopP(0.5)(_log([0.4, 0.25, 0.25, 0.1]))) == [0, 1, 2]


# --- min-p (Nguyen et al. 2024) ---


@pytest.mark.parametrize(
    "min_p, kept",
    [
        (0.0, [0, 1, 2, 3]),
        (0.1 - 1e-9, [0, 1, 2, 3]),  # floor 0.05 - eps: 0.05 >= floor
        (0.1 + 1e-9, [0, 1, 2]),
        (0.25, [0, 1, 2]),  # floor 0.125
        (0.35, [0, 1]),  # floor 0.175
        (0.6 + 1e-9, [0]),
        (1.0, [0]),
    ],
)
def test_min_p_keeps_tokens_with_p_at_least_min_p_times_p_max(min_p, kept):
    assert _kept(MinP(min_p)(_log([0.5, 0.3, 0.15, 0.05]))) == kept


def test_min_p_one_keeps_every_token_tied_with_the_max():
    assert _kept(MinP(1.0)(_row([2.0, 1.0, 2.0]))) == [0, 2]


# --- the chain ---


def test_from_settings_builds_the_documented_order_and_drops_no_ops():
    chain = LogitsChain.from_settings(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2)
    assert [type(p) for p in chain.processors] == list(ORDER)
    assert LogitsChain.from_settings().processors == ()
    assert LogitsChain.from_settings(top_k=None, top_p=None, min_p=None, repetition_penalty=None).processors == ()
    assert [type(p) for p in LogitsChain.from_settings(top_p=0.5).processors] == [TopP]
    logits = torch.randn(3, 7)
    assert torch.equal(LogitsChain()(logits), logits)


def test_chain_refuses_processors_out_of_order_or_repeated():
    with pytest.raises(UserError, match="out of order"):
        LogitsChain([TopK(3), Temperature(0.5)])
    with pytest.raises(UserError, match="repeated"):
        LogitsChain([TopK(3), TopK(2)])
    with pytest.raises(UserError, match="not a logits processor"):
        LogitsChain([lambda logits, ids: logits])


# A fixed distribution where every stage changes the result, by hand:
#   logits          3.3   2.5   2.0   1.5   1.0   0.5   0.0  -0.5  -1.0  -2.0
#   penalty 1.5 on tokens 0 and 8 (0 positive: / 1.5; 8 negative: * 1.5):
#                   2.2   2.5   2.0   1.5   1.0   0.5   0.0  -0.5  -1.5  -2.0  (token 1 is now the best)
#   temperature 0.8: logits / 0.8
#   top-k 7: drops tokens 7, 8, 9
#   top-p 0.92: probabilities of 1 0 2 3 4 5 6: .3586 .2465 .1920 .1027 .0550 .0294 .0158,
#               cumulative .3586 .6051 .7971 .8998 .9548 -> keeps 1 0 2 3 4
#   min-p 0.2: p / p_max = .687 .535 .286 .153 for 0 2 3 4 -> drops token 4
#   kept: tokens 0, 1, 2, 3, with probabilities softmax([2.2, 2.5, 2.0, 1.5] / 0.8)
LOGITS = [3.3, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0]
GENERATED = [0, 8, 8]
SETTINGS = dict(repetition_penalty=1.5, temperature=0.8, top_k=7, top_p=0.92, min_p=0.2)
KEPT = [0, 1, 2, 3]


def _expected() -> np.ndarray:
    scaled = np.array([2.2, 2.5, 2.0, 1.5]) / 0.8
    probs = np.zeros(len(LOGITS))
    probs[KEPT] = np.exp(scaled) / np.exp(scaled).sum()
    return probs


def test_chain_matches_the_hand_computed_distribution():
    chain = LogitsChain.from_settings(**SETTINGS)
    out = chain(_row(LOGITS), torch.tensor([GENERATED]))
    assert _kept(out) == KEPT
    np.testing.assert_allclose(torch.softmax(out, -1)[0].numpy(), _expected(), rtol=1e-5, atol=1e-7)
    # stage by stage, as derived above
    logits, generated = _row(LOGITS), torch.tensor([GENERATED])
    after = {}
    for processor in chain.processors:
        logits = processor(logits, generated)
        after[type(processor)] = _kept(logits)
    assert after[RepetitionPenalty] == list(range(10)) and int(logits.argmax()) == 1
    assert after[Temperature] == list(range(10))
    assert after[TopK] == [0, 1, 2, 3, 4, 5, 6]
    assert after[TopP] == [0, 1, 2, 3, 4]
    assert after[MinP] == KEPT


def test_sampling_frequencies_match_the_filtered_renormalised_distribution():
    """Chi-square goodness of fit, alpha = 0.001, 40 000 seeded draws in one call."""
    n = 40_000
    chain = LogitsChain.from_settings(**SETTINGS)
    logits = _row(LOGITS).expand(n, -1)  # (N, V)
    generated = torch.tensor([GENERATED]).expand(n, -1)  # (N, T)
    ids = _draw(chain, logits, generated, torch.Generator().manual_seed(0))  # (N, 1)
    counts = np.bincount(ids.flatten().numpy(), minlength=len(LOGITS))
    expected = _expected()
    assert counts[expected == 0].sum() == 0  # filtered tokens are never drawn
    fit = chisquare(counts[KEPT], expected[KEPT] * n)
    assert fit.pvalue > 0.001, (counts, expected * n)
    # the test has power: the distribution without the repetition penalty is rejected
    wrong = np.exp(np.array(LOGITS[:4]) / 0.8)
    assert chisquare(counts[KEPT], wrong / wrong.sum() * n).pvalue < 1e-9


def test_batch_rows_are_processed_independently():
    torch.manual_seed(4)
    logits = torch.randn(5, 20)  # (B, V)
    generated = torch.randint(0, 20, (5, 4))  # (B, T)
    chain = LogitsChain.from_settings(temperature=0.7, top_k=8, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    together = chain(logits, generated)
    for b in range(5):
        assert torch.equal(together[b : b + 1], chain(logits[b : b + 1], generated[b : b + 1]))


@pytest.mark.parametrize("temperature, top_k", [(1.5, 3), (0.7, 5), (2.0, None)])
def test_draws_follow_the_top_k_softmax_at_the_temperature(temperature, top_k):
    """The engine's draws follow softmax(logits / T) over the k largest logits (Fan et al. 2018):
    chi-square, alpha = 0.001, 20 000 seeded draws; the test has power (T = 1 is rejected); seeded draws repeat."""
    n, row = 20_000, torch.tensor([[2.0, -1.0, 0.5, 1.5, 0.0, 1.0, -0.5, 0.25]])  # (1, V)
    kept = torch.topk(row[0], top_k or row.shape[1]).indices.sort().values.numpy()
    draws = _next_token(row.expand(n, -1), temperature, top_k, torch.Generator().manual_seed(3))  # (N, 1)
    counts = np.bincount(draws.flatten().numpy(), minlength=row.shape[1])
    assert counts.sum() - counts[kept].sum() == 0  # nothing outside the top k
    scaled = np.exp(row[0].double().numpy()[kept] / temperature)
    assert chisquare(counts[kept], scaled / scaled.sum() * n).pvalue > 0.001
    untempered = np.exp(row[0].double().numpy()[kept])
    assert chisquare(counts[kept], untempered / untempered.sum() * n).pvalue < 1e-9
    again = _next_token(row.expand(n, -1), temperature, top_k, torch.Generator().manual_seed(3))
    assert torch.equal(draws, again)


def test_drawing_at_temperature_zero_is_the_first_argmax():
    torch.manual_seed(5)
    logits = torch.randn(64, 50)  # (B, V)
    logits[0, [3, 7]] = 10.0  # a tie: the first index wins
    ids = _next_token(logits, 0, 50, torch.Generator().manual_seed(0))
    assert torch.equal(ids[:, 0], logits.argmax(dim=-1)) and int(ids[0]) == 3


# --- bad arguments ---


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=INF), "temperature"),
        (dict(temperature="0.8"), "temperature"),
        (dict(temperature=True), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_k=True), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=-0.2), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(min_p=-0.01), "min_p"),
        (dict(min_p=1.01), "min_p"),
        (dict(min_p=float("nan")), "min_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(repetition_penalty=-1.2), "repetition_penalty"),
        (dict(repetition_penalty=INF), "repetition_penalty"),
    ],
)
def test_bad_settings_are_one_line_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        LogitsChain.from_settings(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_shapes_are_user_errors():
    chain = LogitsChain.from_settings(top_k=2)
    with pytest.raises(UserError, match="logits"):
        chain(torch.randn(10))
    with pytest.raises(UserError, match="logits"):
        chain(torch.arange(10).reshape(1, 10))
    with pytest.raises(UserError, match="generated_ids"):
        chain(torch.randn(2, 10), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(UserError, match="generated_ids"):
        chain(torch.randn(2, 10), torch.zeros(2, 4))
