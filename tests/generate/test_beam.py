"""Beam search (lmforge.generate.beam) on tiny T5-, BART-, GPT-2- and Llama-style models in float64:
one beam is greedy decoding; the returned hypothesis scores at least greedy's log-probability
(recomputed without a cache) and its per-token log-probabilities sum to it; the cached search
with ``cache.reorder`` equals a no-cache reference written here; through the engine, beams are
outputs with the finish reasons and scores of the search; bad settings are one-line UserErrors."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import UserError
from lmforge.generate.beam import beam_hypotheses
from lmforge.generate.config import GenerateConfig
from lmforge.models import build_model
from lmforge.plan.presets import get_preset

V, START = 64, 0
SMALL = dict(n_decoder_layers=2, d_model=64, n_heads=4, d_ff=128, vocab_size=V, context=32)
SMALL_ED = dict(SMALL, n_encoder_layers=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: OpenMP threads spinning beside another process's work slow tiny models a
    hundredfold (as in tests/models/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-bart", "tiny-gpt2", "tiny-llama"])
def model(request, one_thread):
    torch.manual_seed(0)
    spec = get_preset(request.param).spec
    spec = spec.with_(**(SMALL if spec.family == "decoder" else SMALL_ED))
    m = build_model(spec).to(torch.float64).eval()
    with torch.no_grad():  # larger random weights: varied outputs (the default init repeats one token)
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.4)
    return m


def _source(seed: int, n: int = 7) -> list[int]:
    return torch.randint(1, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _search(model, src: list[int], **settings):
    """beam_hypotheses for either family (an encoder-decoder's decoder starts from START)."""
    start = None if model.spec.family == "decoder" else START
    return beam_hypotheses(model, src, decoder_start_id=start, **settings)


@torch.no_grad()
def _all_logp(model, src: list[int], prefixes: list[list[int]]) -> torch.Tensor:
    """Log-probabilities (n, T, V) at every position after the source/prompt, for equal-length
    ``prefixes``, no cache: position t predicts the token after ``prefix[:t]``."""
    n = len(prefixes)
    if model.spec.family == "decoder":
        ids = torch.tensor([[*src, *p] for p in prefixes], dtype=torch.long)  # (n, P + T)
        return torch.log_softmax(model(ids)[:, len(src) - 1 :], dim=-1)  # (n, T + 1, V)
    memory = model.encode(torch.tensor([src])).expand(n, -1, -1)  # (n, S, C)
    dec = torch.tensor([[START, *p] for p in prefixes], dtype=torch.long)  # (n, T + 1)
    return torch.log_softmax(model.decode(dec, memory), dim=-1)  # (n, T + 1, V)


def _logp(model, src: list[int], prefixes: list[list[int]]) -> torch.Tensor:
    """Next-token log-probabilities (n, V) after each of ``prefixes`` (equal lengths), no cache."""
    return _all_logp(model, src, prefixes)[:, -1]


@torch.no_grad()
def _greedy(model, src: list[int], max_new: int, eos: int) -> list[int]:
    ids: list[int] = []
    for _ in range(max_new):
        token = int(_logp(model, src, [ids])[0].argmax())
        if token == eos:
            break
        ids.append(token)
    return ids


def _score(model, src: list[int], ids: list[int], ended: bool, eos: int) -> float:
    """Total log-probability of ``ids`` (+ eos when ``ended``), one full pass, no cache."""
    targets = ids + [eos] if ended else ids
    if not targets:
        return 0.0
    logp = _all_logp(model, src, [targets[:-1]])[0]  # (T, V)
    return float(logp[torch.arange(len(targets)), torch.tensor(targets)].sum())


@torch.no_grad()
def _reference(model, src, K, max_new, eos, alpha) -> list[tuple[list[int], float]]:
    """Beam search recomputing every prefix from scratch (no cache, no reorder)."""
    beams, scores, finished = [[]], [0.0], []
    for step in range(max_new):
        logp = _logp(model, src, beams)  # (n, V)
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
        got = _search(model, src, num_beams=1, max_new_tokens=10, eos_id=eos)[0].ids
        assert got == expected == greedy[: greedy.index(eos)]
        assert _search(model, src, num_beams=1, max_new_tokens=6, eos_id=-1)[0].ids == greedy[:6]


def test_beam_scores_at_least_greedy(model):
    gains = []
    for seed, eos_at in [(s, e) for s in range(3) for e in (2, None)]:
        src = _source(seed + 10)
        eos = -1 if eos_at is None else _greedy(model, src, 8, eos=-1)[eos_at]  # -1: every hypothesis has 8 tokens
        greedy = _greedy(model, src, 8, eos)
        greedy_lp = _score(model, src, greedy, len(greedy) < 8, eos)
        best = _search(model, src, num_beams=4, max_new_tokens=8, eos_id=eos, length_penalty=0.0)[0]
        recomputed = _score(model, src, best.ids, best.ended, eos)
        assert recomputed == pytest.approx(best.logprob, abs=1e-9)  # cached scores are the model's
        # the per-token log-probabilities are the model's too (eos, when it ended, is not a token)
        assert _score(model, src, best.ids, False, eos) == pytest.approx(sum(best.logprobs), abs=1e-9)
        if eos_at is None:  # with eos, transformers' rule (an eos counts only within the best K) can drop
            assert recomputed >= greedy_lp - 1e-9  # greedy's ended sequence: no guarantee there
        gains.append(recomputed - greedy_lp)
    assert max(gains) > 0.1  # the search does find better sequences than greedy here


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_cache_reorder_matches_no_cache_reference(model, alpha):
    for seed in range(3):
        src = _source(seed + 20)
        eos = _greedy(model, src, 6, eos=-1)[1]
        hyps = _search(model, src, num_beams=3, max_new_tokens=6, eos_id=eos, length_penalty=alpha)
        ref = _reference(model, src, 3, 6, eos, alpha)
        assert [h.ids for h in hyps] == [ids for ids, _ in ref]
        assert [h.score for h in hyps] == pytest.approx([s for _, s in ref], abs=1e-9)


def test_max_new_tokens_zero(model):
    assert _search(model, _source(0), num_beams=2, max_new_tokens=0, eos_id=1)[0].ids == []


@pytest.mark.parametrize("settings, needle", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2.0), "num_beams"),
    (dict(num_beams=True), "num_beams"),
    (dict(num_beams=2, length_penalty=math.nan), "length_penalty must be a finite number"),
    (dict(num_beams=2, length_penalty=math.inf), "length_penalty must be a finite number"),
    (dict(num_beams=2, length_penalty="1"), "length_penalty must be a finite number"),
    (dict(length_penalty=2.0), "length_penalty ranks beams"),
    (dict(num_beams=2, temperature=0.0), "temperature 0.0 with num_beams 2"),
    (dict(num_beams=2, top_k=5), "top_k 5 with num_beams 2"),
    (dict(num_beams=2, repetition_penalty=1.2), "repetition_penalty"),
    (dict(num_beams=2, num_samples=3), "at most num_beams outputs"),
    (dict(num_beams=2, slide_window=True), "does not slide the window"),
])
def test_bad_beam_settings_are_one_line_errors(settings, needle):
    with pytest.raises(UserError, match=needle) as err:
        GenerateConfig(**settings)
    assert "\n" not in str(err.value)
