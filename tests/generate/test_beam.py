"""Beam search (lmforge.generate.beam) on tiny T5- and BART-style models in float64: one beam is
greedy decoding; the returned hypothesis scores at least greedy's log-probability (recomputed
without a cache); the cached search with ``cache.reorder`` equals a no-cache reference written
here; bad arguments are one-line UserErrors."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import UserError
from lmforge.generate.beam import beam_hypotheses, beam_search
from lmforge.models import build_model
from lmforge.plan.presets import get_preset

V, START = 64, 0
SMALL_ED = dict(n_encoder_layers=2, n_decoder_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=V, context=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: OpenMP threads spinning beside another process's work slow tiny models a
    hundredfold (as in tests/models/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-bart"])
def model(request, one_thread):
    torch.manual_seed(0)
    m = build_model(get_preset(request.param).spec.with_(**SMALL_ED)).to(torch.float64).eval()
    with torch.no_grad():  # larger random weights: varied outputs (the default init repeats one token)
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.4)
    return m


def _source(seed: int, n: int = 7) -> list[int]:
    return torch.randint(1, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.no_grad()
def _logp(model, memory: torch.Tensor, prefixes: list[list[int]]) -> torch.Tensor:
    """Next-token log-probabilities (n, V) after ``[START, *prefix]`` for equal-length prefixes, no cache."""
    dec = torch.tensor([[START, *p] for p in prefixes], dtype=torch.long)  # (n, T)
    mem = memory.expand(len(prefixes), -1, -1)  # (n, S, C)
    return torch.log_softmax(model.decode(dec, mem)[:, -1], dim=-1)  # (n, V)


@torch.no_grad()
def _greedy(model, src: list[int], max_new: int, eos: int) -> list[int]:
    memory = model.encode(torch.tensor([src]))
    ids: list[int] = []
    for _ in range(max_new):
        token = int(_logp(model, memory, [ids])[0].argmax())
        if token == eos:
            break
        ids.append(token)
    return ids


@torch.no_grad()
def _score(model, src: list[int], ids: list[int], ended: bool, eos: int) -> float:
    """Total log-probability of ``ids`` (+ eos when ``ended``), one full pass, no cache."""
    memory = model.encode(torch.tensor([src]))
    targets = ids + [eos] if ended else ids
    dec = torch.tensor([[START, *targets[:-1]]])
    logp = torch.log_softmax(model.decode(dec, memory)[0], dim=-1)  # (T, V)
    return float(logp[torch.arange(len(targets)), torch.tensor(targets)].sum())


@torch.no_grad()
def _reference(model, src, K, max_new, eos, alpha) -> list[tuple[list[int], float]]:
    """Beam search recomputing every prefix from scratch (no cache, no reorder)."""
    memory = model.encode(torch.tensor([src]))
    beams, scores, finished = [[]], [0.0], []
    for step in range(max_new):
        logp = _logp(model, memory, beams)  # (n, V)
        total = (torch.tensor(scores, dtype=torch.float64)[:, None] + logp).view(-1)
        cand = sorted(((float(s), i) for i, s in enumerate(total.tolist())), key=lambda c: -c[0])[: 2 * K]
        nb, ns = [], []
        for rank, (s, flat) in enumerate(cand):
            b, tok = divmod(flat, V)
            if tok == eos:
                if rank < K:
                    finished.append((beams[b], s / (len(beams[b]) + 1) ** alpha))
                continue
            nb.append([*beams[b], tok])
            ns.append(s)
            if len(nb) == K:
                break
        if len(finished) >= K or step == max_new - 1:
            break
        beams, scores = nb, ns
    if len(finished) < K:
        finished += [(ids, s / len(ids) ** alpha) for ids, s in zip(nb, ns, strict=True)]
    return sorted(finished, key=lambda h: -h[1])[:K]


def test_one_beam_is_greedy(model):
    for seed in range(3):
        src = _source(seed)
        greedy = _greedy(model, src, 10, eos=-1)
        eos = greedy[3]  # a token the model actually emits, so the search ends on it
        expected = _greedy(model, src, 10, eos)
        got = beam_search(model, src, num_beams=1, max_new_tokens=10, decoder_start_id=START, eos_id=eos)
        assert got == expected == greedy[: greedy.index(eos)]
        assert beam_search(model, src, num_beams=1, max_new_tokens=6, decoder_start_id=START, eos_id=-1) == greedy[:6]


def test_beam_scores_at_least_greedy(model):
    gains = []
    for seed, eos_at in [(s, e) for s in range(3) for e in (2, None)]:
        src = _source(seed + 10)
        eos = -1 if eos_at is None else _greedy(model, src, 8, eos=-1)[eos_at]  # -1: every hypothesis has 8 tokens
        greedy = _greedy(model, src, 8, eos)
        greedy_lp = _score(model, src, greedy, len(greedy) < 8, eos)
        best = beam_hypotheses(
            model, src, num_beams=4, max_new_tokens=8, decoder_start_id=START, eos_id=eos, length_penalty=0.0
        )[0]
        recomputed = _score(model, src, best.ids, best.ended, eos)
        assert recomputed == pytest.approx(best.logprob, abs=1e-9)  # cached scores are the model's
        assert recomputed >= greedy_lp - 1e-9
        gains.append(recomputed - greedy_lp)
    assert max(gains) > 0.1  # the search does find better sequences than greedy here


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_cache_reorder_matches_no_cache_reference(model, alpha):
    for seed in range(3):
        src = _source(seed + 20)
        eos = _greedy(model, src, 6, eos=-1)[1]
        hyps = beam_hypotheses(
            model, src, num_beams=3, max_new_tokens=6, decoder_start_id=START, eos_id=eos, length_penalty=alpha
        )
        ref = _reference(model, src, 3, 6, eos, alpha)
        assert [h.ids for h in hyps] == [ids for ids, _ in ref]
        assert [h.score for h in hyps] == pytest.approx([s for _, s in ref], abs=1e-9)


def test_max_new_tokens_zero_and_bad_args(model):
    src = _source(0)
    kw = dict(max_new_tokens=4, decoder_start_id=START, eos_id=1)
    assert beam_search(model, src, num_beams=2, max_new_tokens=0, decoder_start_id=START, eos_id=1) == []
    bad = [
        dict(num_beams=0),
        dict(num_beams=2.0),
        dict(num_beams=True),
        dict(num_beams=2, length_penalty=math.nan),
        dict(num_beams=2, length_penalty=math.inf),
        dict(num_beams=2, length_penalty="1"),
        dict(num_beams=2, max_new_tokens=-1),
        dict(num_beams=2, max_new_tokens=33),
    ]
    for args in bad:
        with pytest.raises(UserError) as err:
            beam_search(model, src, **{**kw, **args})
        assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        beam_search(model, [], num_beams=2, **kw)
