"""Built-in corpora: the standard library's docstrings, and a Markov chain with an exact entropy rate."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import lmforge.data.builtin as builtin
from lmforge.data.builtin import MarkovSource, pydocs_documents, pydocs_parameters
from lmforge.errors import UserError


def h2(p: float) -> float:
    """Binary entropy in nats."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_pydocs_is_a_few_mb_of_english_and_deterministic():
    docs = list(pydocs_documents())
    builtin._pydocs.cache_clear()  # rebuild from the files: the same corpus again
    assert list(pydocs_documents()) == docs
    text = "\n\n".join(docs)
    size = len(text.encode("utf-8"))
    assert 1_000_000 < size < 10_000_000, size
    assert len(docs) > 200
    letters = sum(c.isalpha() for c in text) / len(text)
    assert letters > 0.6  # prose, not code
    assert any("JSON (JavaScript Object Notation)" in d for d in docs)  # json's module docstring
    assert len(set(docs)) == len(docs)


def test_pydocs_leaves_out_tests_and_split_out_modules():
    root = builtin.stdlib_dir()
    files = [p.relative_to(root).parts for p in builtin._module_files(root)]
    assert ("json", "decoder.py") in files and ("os.py",) in files
    assert not any(builtin.PYDOCS_SKIP.intersection(parts) for parts in files)
    assert files == [p.relative_to(root).parts for p in builtin._module_files(root)]


@pytest.mark.slow  # a long training or many processes: CI runs it (-m slow)
def test_pydocs_fingerprint_parameters_name_the_python():
    assert pydocs_parameters()["python"] == sys.version


def test_entropy_rate_two_symbols_by_hand():
    """Order 1, P = [[0.9, 0.1], [0.4, 0.6]]: pi = (0.8, 0.2), H = 0.8 h(0.1) + 0.2 h(0.4).

    The two-state chain of Cover & Thomas 2006, Sec. 4.2: pi = (b, a) / (a + b), H = pi_1 h(a) + pi_2 h(b).
    """
    source = MarkovSource.from_transitions([[0.9, 0.1], [0.4, 0.6]], alphabet="ab")
    assert source.order == 1
    np.testing.assert_allclose(source.stationary(), [0.8, 0.2], atol=1e-13)
    assert source.entropy_rate_nats() == pytest.approx(0.8 * h2(0.1) + 0.2 * h2(0.4), abs=1e-12)
    assert source.entropy_rate_bits() == pytest.approx(source.entropy_rate_nats() / math.log(2))


def test_periodic_and_iid_chains():
    flip = MarkovSource.from_transitions([[0.0, 1.0], [1.0, 0.0]], alphabet="ab")  # abab...: periodic
    np.testing.assert_allclose(flip.stationary(), [0.5, 0.5])
    assert flip.entropy_rate_nats() == 0.0
    assert all(d in ("abababab", "babababa") for d in flip.documents(10, 8))
    iid = MarkovSource.from_transitions([[0.5, 0.25, 0.25]], alphabet="xyz")
    assert iid.order == 0 and iid.entropy_rate_nats() == pytest.approx(1.5 * math.log(2))


def test_entropy_rate_matches_a_monte_carlo_estimate():
    """Plug-in conditional entropy H(X_t | previous k) from ~1M sampled transitions."""
    source = MarkovSource(order=2, alphabet="abcdefgh", seed=3)
    a, k = 8, 2
    docs = list(source.documents(2000, 500))
    sym = np.frombuffer("".join(docs).encode("ascii"), dtype=np.uint8).reshape(2000, 500) - ord("a")
    state = sym[:, :-2].astype(np.int64) * a + sym[:, 1:-1]  # (docs, L - k)
    cells = np.bincount((state * a + sym[:, 2:]).ravel(), minlength=a ** (k + 1)).reshape(a**k, a)
    n_state = cells.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = -np.nansum(cells * np.log(cells / n_state)) / cells.sum()
    assert estimate == pytest.approx(source.entropy_rate_nats(), abs=0.005)  # measured: 7e-4 off
    freq = np.bincount(sym.ravel(), minlength=a) / sym.size  # first symbols start from pi too
    marginal = source.stationary().reshape(a, a).sum(axis=1)
    np.testing.assert_allclose(freq, marginal, atol=0.005)


def test_default_entropy_rate_is_well_below_uniform():
    source = MarkovSource()
    ratio = source.entropy_rate_nats() / math.log(8)
    assert 0.6 < ratio < 0.85, ratio
    pi = source.stationary()
    assert pi.sum() == pytest.approx(1.0) and (pi > 0).all()
    np.testing.assert_allclose(source._step(pi), pi, atol=1e-14)  # a fixed point of the chain


def test_documents_are_deterministic_and_prefix_stable():
    source = MarkovSource(order=2, alphabet="abcd", seed=7)
    docs = list(source.documents(700, 64))
    assert len(docs) == 700 and all(len(d) == 64 and set(d) <= set("abcd") for d in docs)
    assert list(MarkovSource(order=2, alphabet="abcd", seed=7).documents(700, 64)) == docs
    assert list(source.documents(5, 64)) == docs[:5]  # doc i does not depend on how many are asked
    assert list(MarkovSource(order=2, alphabet="abcd", seed=8).documents(5, 64)) != docs[:5]
    assert len(set(docs)) == 700
    assert [len(d) for d in source.documents(3, 1)] == [1, 1, 1]  # shorter than the order


def test_bad_parameters():
    with pytest.raises(UserError, match="alphabet"):
        MarkovSource(alphabet="aa")
    with pytest.raises(UserError, match="concentration"):
        MarkovSource(concentration=0)
    with pytest.raises(UserError, match="too many states"):
        MarkovSource(order=8, alphabet="abcdefgh")
    with pytest.raises(UserError, match="rows of probabilities"):
        MarkovSource.from_transitions([[0.5, 0.6], [0.5, 0.5]], alphabet="ab")
    with pytest.raises(UserError):
        list(MarkovSource().documents(0, 10))
