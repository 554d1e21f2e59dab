"""Built-in corpora that need no network: ``builtin:pydocs`` and ``builtin:markov``.

``pydocs``: the documentation strings of the running interpreter's standard library, read
from its source files with ``ast`` (nothing is imported), plus the language-reference topics
of ``pydoc_data.topics`` that ``help()`` shows. Deterministic for a given Python version:
modules in sorted order, docstrings in source order, exact repeats dropped. Modules some
distributions ship separately (tkinter, idlelib, turtle, lib2to3, distutils, ensurepip) and
test suites are left out, so the corpus is the same wherever that version is installed.

``markov``: a seeded random Markov chain of order k over a small alphabet with Dirichlet
transition rows, whose entropy rate is known exactly (Cover & Thomas 2006, "Elements of
Information Theory", Thm. 4.2.4: H = sum_s pi(s) H(P(.|s)) for a stationary chain), so a
model's loss can be compared with the true optimum.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import UserError, check_positive, check_whole

PYDOCS_VERSION = 1  # bump when the extraction rules change: fingerprints change with it
PYDOCS_SKIP = frozenset(
    {
        "test", "tests", "idle_test", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "distutils",
        "ensurepip", "encodings", "pydoc_data", "__phello__", "__hello__", "this", "antigravity",
    }
)  # fmt: skip


def stdlib_dir() -> Path:
    """The folder holding the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(root: Path) -> Iterator[Path]:
    """Standard-library source files, top-level modules by sorted name, packages walked sorted."""
    for name in sorted(sys.stdlib_module_names):
        if name in PYDOCS_SKIP:
            continue
        module, package = root / f"{name}.py", root / name
        if module.is_file():
            yield module
        elif package.is_dir():
            files = sorted(package.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
            yield from (p for p in files if not PYDOCS_SKIP.intersection(p.relative_to(root).parts))


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings of a module, its classes and functions, in source order."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            yield doc.strip()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.stmt, ast.ExceptHandler, ast.match_case)):
            yield from _docstrings(child)


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None


def _topics(root: Path) -> list[str]:
    """The language-reference topics of ``pydoc_data/topics.py`` (a dict literal of str)."""
    tree = _parse(root / "pydoc_data" / "topics.py")
    for node in tree.body if tree else []:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            values = node.value.values
            return [v.value.strip() for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


@functools.lru_cache(maxsize=1)
def _pydocs() -> tuple[str, ...]:
    root = stdlib_dir()
    if not (root / "os.py").is_file():
        raise UserError(
            "builtin:pydocs needs the standard library's source files", str(root), "use another source (--data PATH)"
        )
    seen: set[str] = set()
    documents = []
    for path in _module_files(root):
        tree = _parse(path)
        if tree is None:
            continue
        docs = [d for d in _docstrings(tree) if not (d in seen or seen.add(d))]
        if docs:
            documents.append("\n\n".join(docs))
    documents.extend(t for t in _topics(root) if t and not (t in seen or seen.add(t)))
    return tuple(documents)


def pydocs_documents() -> Iterator[str]:
    """Docstrings of the standard library, one document per module, then pydoc topics.

    About 1.8 MB of English on CPython 3.11; about 2 s to build, cached per process.
    """
    yield from _pydocs()


def pydocs_parameters() -> dict:
    """What ``builtin:pydocs`` depends on, for input fingerprints: its text's sha256 included, so a
    patched standard library changes it and the same one in another folder does not."""
    text = hashlib.sha256("\x00".join(_pydocs()).encode("utf-8")).hexdigest()
    return {"builtin": "pydocs", "version": PYDOCS_VERSION, "python": sys.version, "sha256": text}


class MarkovSource:
    """A stationary Markov chain of order ``order`` over ``alphabet`` (one character per symbol).

    Each row of the transition matrix, one per k-gram state, is drawn from a symmetric
    Dirichlet(``concentration``) with numpy's generator seeded by ``seed``. The expected
    entropy of such a row is psi(A c + 1) - psi(c + 1) nats (A = alphabet size): with the
    default c = 0.5 and 8 letters about 1.47 nats, 0.71 of log 8 — clearly learnable, far
    from trivial. States are k-grams with the oldest symbol most significant.
    """

    def __init__(
        self,
        order: int = 2,
        alphabet: str = "abcdefgh",
        seed: int = 0,
        concentration: float = 0.5,
        *,
        transitions: Sequence[Sequence[float]] | np.ndarray | None = None,
    ):
        self.order = check_whole("markov order", order, upper=16, allow_zero=True)
        if not isinstance(alphabet, str) or len(set(alphabet)) != len(alphabet) or not 2 <= len(alphabet) <= 256:
            raise UserError("markov alphabet must be 2 to 256 distinct characters", alphabet, "pass e.g. abcdefgh")
        self.alphabet = alphabet
        self.seed = check_whole("markov seed", seed, upper=2**63 - 1, allow_zero=True)
        self.concentration = float(check_positive("markov concentration", concentration, upper=1e6))
        a, n_states = len(alphabet), len(alphabet) ** order
        if n_states > 1 << 20:
            raise UserError("markov chain has too many states", f"{a}^{order}", "lower the order or the alphabet")
        if transitions is None:
            p = np.random.default_rng(seed).dirichlet(np.full(a, self.concentration), size=n_states)
        else:
            p = np.asarray(transitions, dtype=np.float64)
            if p.shape != (n_states, a) or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0):
                raise UserError("markov transitions must be rows of probabilities", p.shape, f"pass {n_states} x {a}")
        self.transitions = p / p.sum(axis=1, keepdims=True)  # (A^k, A)
        self._stationary: np.ndarray | None = None

    @classmethod
    def from_transitions(cls, transitions: Sequence[Sequence[float]] | np.ndarray, alphabet: str) -> MarkovSource:
        """A chain with given transition rows; the order follows from the number of rows."""
        rows, a = len(transitions), len(alphabet)
        order = round(math.log(rows, a)) if rows > 1 else 0
        return cls(order=order, alphabet=alphabet, transitions=transitions)

    @property
    def n_states(self) -> int:
        return len(self.alphabet) ** self.order

    def _step(self, pi: np.ndarray) -> np.ndarray:
        """One step of the chain on a distribution over k-gram states: pi P."""
        a, k = len(self.alphabet), self.order
        if k == 0:
            return pi
        flow = (pi[:, None] * self.transitions).reshape(a, a ** (k - 1), a)  # (first symbol, rest, next)
        return flow.sum(axis=0).reshape(-1)  # new state = rest * A + next

    def stationary(self, tol: float = 1e-15, max_iter: int = 1_000_000) -> np.ndarray:
        """Stationary distribution over k-grams, by power iteration of the lazy chain (I + P)/2.

        The lazy chain has the same stationary distribution and converges even where P
        is periodic (Levin, Peres & Wilmer 2009, "Markov Chains and Mixing Times", Sec. 1.3).
        """
        if self._stationary is None:
            pi = np.full(self.n_states, 1.0 / self.n_states)
            for _ in range(max_iter):
                new = 0.5 * (pi + self._step(pi))
                new /= new.sum()
                done = np.abs(new - pi).sum() < tol
                pi = new
                if done:
                    break
            self._stationary = pi
        return self._stationary

    def entropy_rate_nats(self) -> float:
        """Exact entropy rate per symbol, sum_s pi(s) H(P(.|s)) in nats (Cover & Thomas Thm. 4.2.4)."""
        p = self.transitions
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)  # (A^k,)
        return float(self.stationary() @ h)

    def entropy_rate_bits(self) -> float:
        return self.entropy_rate_nats() / math.log(2)

    def parameters(self) -> dict:
        """What the chain depends on, for input fingerprints (numpy's generator included)."""
        return {
            "builtin": "markov",
            "order": self.order,
            "alphabet": self.alphabet,
            "seed": self.seed,
            "concentration": self.concentration,
            "numpy": np.__version__,
            "transitions_sha": hashlib.sha256(self.transitions.tobytes()).hexdigest(),
        }

    def documents(self, n_docs: int, doc_len: int) -> Iterator[str]:
        """``n_docs`` documents of ``doc_len`` symbols, each starting from the stationary law.

        Deterministic: document i depends only on (transitions, seed, doc_len, i), not on
        ``n_docs``. Sampled in blocks of documents at once with numpy.
        """
        check_whole("markov documents", n_docs, upper=10**9)
        check_whole("markov document length", doc_len, upper=10**8)
        a, k = len(self.alphabet), self.order
        cum_p = np.cumsum(self.transitions, axis=1)  # (A^k, A)
        cum_p[:, -1] = 1.0
        cum_pi = np.cumsum(self.stationary())
        cum_pi[-1] = 1.0
        codes = np.array([ord(c) for c in self.alphabet], dtype="<u4")
        block = max(1, min(512, (1 << 20) // doc_len))
        head = min(k, doc_len)
        for first in range(0, n_docs, block):
            rng = np.random.default_rng([self.seed, 1, doc_len, first // block])
            b = min(block, n_docs - first)
            states = np.searchsorted(cum_pi, rng.random(block)[:b], side="right")  # (b,)
            u = rng.random((block, doc_len - head))[:b]  # (b, L - k); full draw: prefix-stable
            symbols = np.empty((b, doc_len), dtype=np.int64)
            for j in range(head):  # the start k-gram's symbols, oldest first
                symbols[:, j] = (states // a ** (k - 1 - j)) % a
            for t in range(doc_len - head):
                y = (u[:, t, None] >= cum_p[states]).sum(axis=1)  # (b,) inverse-CDF draw
                symbols[:, head + t] = y
                if k:
                    states = (states % a ** (k - 1)) * a + y
            for row in codes[symbols]:
                yield row.tobytes().decode("utf-32-le")
