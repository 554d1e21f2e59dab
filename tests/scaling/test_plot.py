"""The sweep's PNG: written, a valid PNG, atomically; with and without Approach 2."""

from __future__ import annotations

import struct

from lmforge.plan.fitted import from_record
from lmforge.plan.laws import EPOCH
from lmforge.scaling.fit import fit_points, law_record
from lmforge.scaling.plot import plot_sweep
from tests.scaling.synthetic import isoflop_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG specification (ISO/IEC 15948), Sec. 5.2


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_valid_png(tmp_path):
    points = isoflop_points(EPOCH, budgets=(1e17, 1e18, 1e19), sizes=5, noise=0.003)
    fit = fit_points(points, bootstrap=0)
    law = from_record(law_record(fit.approach3, fit.approach2, None))
    out = plot_sweep(points, tmp_path / "plot.png", law=law, approach2=fit.approach2)
    width, height = _png_size(out)
    assert width > 800 and height > 600 and out.stat().st_size > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temp file left


def test_plot_without_approach2_and_with_non_embedding_counts(tmp_path):
    points = isoflop_points(EPOCH, budgets=(1e18,), sizes=5)
    law = from_record(law_record(fit_points(isoflop_points(EPOCH), bootstrap=0).approach3, None, None))
    out = plot_sweep(points, tmp_path / "one.png", law=law, n_counts="non_embedding_params")
    assert _png_size(out)[0] > 800
