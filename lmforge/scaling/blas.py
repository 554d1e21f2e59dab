"""One BLAS thread while fitting: many tiny optimisations are slowed, not sped, by threads.

scipy's L-BFGS-B calls BLAS on vectors of five numbers a few hundred times per fit. With
OpenBLAS's worker threads awake on a machine whose cores are busy (a training run beside
the fit, two cores), each call waits for threads that have nothing to do: measured here
on 2 cores beside a training run, one L-BFGS-B fit of 35 points took 0.92 s with the
default threads and 0.009 s with one. ``one_blas_thread`` sets the OpenBLAS libraries that
numpy and scipy bundle (their ``*.libs`` folders) to one thread and restores them after,
by the libraries' own ``openblas_set_num_threads`` (as threadpoolctl does). Elsewhere
(another BLAS, no bundled library) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
from collections.abc import Iterator
from pathlib import Path

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("", "64_", "_64")


def _bundled() -> list[Path]:
    found = []
    for package in ("numpy", "scipy"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        here = Path(spec.origin).parent
        for libs in (here.parent / f"{package}.libs", here / ".dylibs"):  # Linux wheels, macOS wheels
            found += sorted(libs.glob("*openblas*.so*")) + sorted(libs.glob("*openblas*.dylib"))
    return found


def _controls() -> list[tuple[object, object]]:
    """(get, set) for every bundled OpenBLAS that exports them."""
    pairs = []
    for path in _bundled():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                    pairs.append((get, put))
                    break
            else:
                continue
            break
    return pairs


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with one OpenBLAS thread in numpy's and scipy's bundled libraries."""
    controls = _controls()
    before = [get() for get, _ in controls]
    for _, put in controls:
        put(1)
    try:
        yield
    finally:
        for (_, put), count in zip(controls, before, strict=True):
            put(count)
