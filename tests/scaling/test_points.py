"""sweep.csv round trip, unfinished rows, sweep.json, and every malformed file as one UserError."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.errors import UserError
from lmforge.plan.laws import EPOCH
from lmforge.scaling.points import COLUMNS, SweepPoint, read_sweep, read_sweep_csv, read_sweep_meta, write_sweep_csv
from tests.scaling.synthetic import isoflop_points

HEADER = ",".join(COLUMNS)


def _csv(tmp_path, *rows: str, header: str = HEADER):
    path = tmp_path / "sweep.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


ROW = "r0,1e17,1000000,800000,16666666666,1e17,3.5,1.2,10.5"


def test_round_trip_keeps_every_value(tmp_path):
    points = isoflop_points(EPOCH, budgets=(1e17, 1e18), sizes=3, noise=0.01)
    path = write_sweep_csv(tmp_path / "sweep.csv", points)
    assert path.read_text().splitlines()[0] == HEADER
    assert read_sweep_csv(path) == points  # floats by repr: exact
    assert not list(tmp_path.glob(".*.tmp-*"))  # written atomically, no temp file left


def test_unfinished_rows_are_skipped_and_counted(tmp_path):
    path = _csv(tmp_path, ROW, "r1,1e17,2000000,,8333333333,,,,", "r2,1e17,3000000,,5555555555,1e17,3.4,,")
    sweep = read_sweep(path)
    assert [p.run for p in sweep.points] == ["r0", "r2"] and sweep.unfinished == 1
    assert sweep.points[1].non_embedding_params is None and sweep.points[1].bits_per_byte is None
    assert read_sweep(tmp_path).path == path  # the sweep directory stands for its sweep.csv


def test_optional_columns_may_be_missing(tmp_path):
    path = _csv(tmp_path, "1e17,1e6,1.6e10,3.5", header="budget_flops,params,tokens,loss")
    (point,) = read_sweep_csv(path)
    assert point == SweepPoint("row1", 1e17, 1e6, None, 1.6e10, None, 3.5)


def test_a_spreadsheets_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "sweep.csv"
    path.write_text("\ufeff" + HEADER + "\n" + ROW + "\n", encoding="utf-8")
    assert read_sweep_csv(path)[0].run == "r0"


def test_sweep_meta(tmp_path):
    path = _csv(tmp_path, ROW)
    assert read_sweep_meta(path) is None
    meta = {"tokenizer": {"sha256": "ab" * 32, "vocab_size": 1024}, "data": {"sources": ["builtin:pydocs"],
            "sha256": "cd" * 32}, "seq_len": 128, "budgets": [1e12, 3e12], "sizes": 5}
    (tmp_path / "sweep.json").write_text(json.dumps(meta))
    assert read_sweep(path).meta == meta
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        read_sweep_meta(path)
    (tmp_path / "sweep.json").write_text(json.dumps({"seq_len": "long"}))
    with pytest.raises(UserError, match="seq_len must be a int"):
        read_sweep_meta(path)


BAD = [
    (lambda p: p / "nothing.csv", "sweep CSV not found"),
    (lambda p: (p / "empty.csv", (p / "empty.csv").write_text(""))[0], "the sweep CSV is empty"),
    (lambda p: (p / "b.csv", (p / "b.csv").write_bytes(bytes(range(256))))[0], "not UTF-8"),
    (lambda p: _csv(p, header=HEADER), "holds no rows"),
    (lambda p: _csv(p, "r0,1e17,1e6,3.5", header="run,budget_flops,params,loss"), "lacks column(s) tokens"),
    (lambda p: _csv(p, "r0,3.5", header="run,loss"), "lacks column(s) budget_flops, params, tokens"),
    (lambda p: _csv(p, ROW, ROW.replace("3.5", "lots")), "not a number in the sweep CSV at row 2, column loss"),
    (lambda p: _csv(p, ROW.replace("1000000", "-5")), "non-positive value in the sweep CSV at row 1, column params"),
    (lambda p: _csv(p, ROW.replace(",3.5,", ",0,")), "non-positive value in the sweep CSV at row 1, column loss"),
    (lambda p: _csv(p, ROW.replace(",3.5,", ",nan,")), "non-finite value in the sweep CSV at row 1, column loss"),
    (lambda p: _csv(p, ROW.replace("16666666666", "inf")), "non-finite value in the sweep CSV at row 1, column tokens"),
    (lambda p: _csv(p, ROW.replace("1e17,1000000", "1e17,")), "empty value in the sweep CSV at row 1, column params"),
    (lambda p: _csv(p, ROW + ",extra"), "row 1 of the sweep CSV has 10 fields"),
    (lambda p: _csv(p, "r1,1e17,2000000,,8333333333,,,,"), "no finished run"),
]


@pytest.mark.parametrize("make, needle", BAD, ids=[needle for _, needle in BAD])
def test_bad_files_are_one_line_errors(tmp_path, make, needle):
    with pytest.raises(UserError) as info:
        read_sweep(make(tmp_path))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_point_n_counts():
    point = SweepPoint("r", 1e17, 1e6, 8e5, 1e10, 6e16, 3.0)
    assert point.n("params") == 1e6 and point.n("non_embedding_params") == 8e5
    assert math.isclose(point.flops, 6 * point.params * point.tokens)
