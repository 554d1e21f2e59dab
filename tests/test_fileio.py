"""lmforge.fileio (atomic files and directories, stale temporaries) and lmforge.tensorfile
(the safetensors writer and reader: tied and aliased tensors, old files, alignment)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmforge import fileio
from lmforge.errors import UserError
from lmforge.fileio import (
    atomic_directory,
    atomic_file,
    remove_stale_temp_files,
    save_figure,
    staging_directory,
    temp_dir_path,
    temp_path,
    write_atomic,
)
from lmforge.tensorfile import ALIGNMENT, load_tensors, save_tensors
from tests.train.test_checkpoint import TiedLM  # GPT-2 style: head.weight is wte.weight

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: no such process


class Boom(Exception):
    pass


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- atomic files and directories


def test_write_atomic_replaces_a_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    write_atomic(target, "old\n")
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert entries(tmp_path) == ["a.json"]


def test_write_atomic_onto_a_directory_fails_and_leaves_it(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir() and entries(tmp_path) == ["d"]


def test_a_failed_write_atomic_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    write_atomic(target, "old")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and entries(tmp_path) == ["a.txt"]


def test_an_error_inside_atomic_file_leaves_the_old_target_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "model.bin"
    with atomic_file(target) as tmp:  # parents created
        assert tmp == temp_path(target) and tmp.name == f".model.bin.tmp-{os.getpid()}"
        tmp.write_bytes(b"first")
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert target.read_bytes() == b"first"
    assert entries(target.parent) == ["model.bin"]


def test_atomic_file_onto_a_directory_fails_and_removes_its_temp(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError), atomic_file(tmp_path / "d") as tmp:
        tmp.write_bytes(b"x")
    assert entries(tmp_path) == ["d"]


def test_save_figure_writes_through_atomic_file(tmp_path):
    class Figure:  # the one method save_figure calls
        def savefig(self, path, format):
            assert format == "png" and Path(path).name.startswith(".plot.png.tmp-")
            Path(path).write_bytes(b"\x89PNG")

    assert save_figure(Figure(), tmp_path / "out" / "plot.png") == tmp_path / "out" / "plot.png"
    assert entries(tmp_path / "out") == ["plot.png"]


def test_atomic_directory_creates_and_replaces_an_existing_directory(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as tmp:
        assert tmp == temp_dir_path(out) and tmp.name == f".tmp-run-{os.getpid()}" and not any(tmp.iterdir())
        (tmp / "a").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("2")
    assert entries(out) == ["a", "sub"]
    with atomic_directory(out) as tmp:
        (tmp / "c").write_text("3")
    assert entries(out) == ["c"]  # the old directory is gone, not merged
    assert entries(tmp_path) == ["run"]  # neither the temp nor the old one moved aside is left


def test_an_error_inside_atomic_directory_leaves_the_old_directory_and_no_temp(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(Boom), atomic_directory(out) as tmp:
        (tmp / "a").write_text("new")
        raise Boom
    assert entries(out) == ["a"] and (out / "a").read_text() == "old"
    assert entries(tmp_path) == ["run"]


def test_a_failed_swap_puts_the_old_directory_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("old")
    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new directory onto out, after the old one moved aside
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", second_fails)
    with pytest.raises(OSError), atomic_directory(out) as tmp:
        (tmp / "a").write_text("new")
    monkeypatch.undo()
    assert (out / "a").read_text() == "old" and entries(tmp_path) == ["run"]


def test_atomic_directory_replaces_a_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("1")
    assert entries(out) == ["x"] and entries(tmp_path) == ["out"]


def test_staging_directory_moves_named_files_in_and_is_removed(tmp_path):
    (tmp_path / "keep.txt").write_text("not ours")
    (tmp_path / "a.bin").write_text("old a")
    with staging_directory(tmp_path, "prepare") as tmp:
        assert tmp.name == f".tmp-prepare-{os.getpid()}"
        (tmp / "a.bin").write_text("new a")
        (tmp / "b.bin").write_text("new b")
        fileio.move_into(tmp, ["a.bin", "b.bin"], tmp_path)
    assert entries(tmp_path) == ["a.bin", "b.bin", "keep.txt"]
    assert (tmp_path / "a.bin").read_text() == "new a"
    with pytest.raises(Boom), staging_directory(tmp_path, "prepare") as tmp:
        (tmp / "c.bin").write_text("c")
        raise Boom
    assert entries(tmp_path) == ["a.bin", "b.bin", "keep.txt"]


def test_stale_cleanup_removes_temps_of_the_scheme_and_nothing_else(tmp_path):
    ours = os.getpid()
    live = os.getppid()  # another process that runs
    stale = [f".model.safetensors.tmp-{DEAD_PID}", f".latest.tmp-{ours}", f".tmp-step-000002-{DEAD_PID}",
             f".tmp-old-step-000002-{DEAD_PID}", f".tmp-prepare-{ours}"]
    kept = [f".config.yaml.tmp-{live}", f".tmp-step-000003-{live}", ".lock", "latest", "model.safetensors",
            "step-000001", ".tmp-nopid", ".hidden.tmp", "a.tmp-123", "tmp-x-123", ".prepare-tmp-x"]
    for name in stale + kept:
        if "step" in name or "prepare" in name:
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"x")
        else:
            (tmp_path / name).write_text("x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert entries(tmp_path) == sorted(kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []


# --------------------------------------------------------------------------- tensorfile


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_a_tied_model_round_trips_with_the_two_names_one_tensor(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    path = save_tensors(tmp_path / "m.safetensors", model.state_dict(), {"lmforge_format": "1"})
    loaded, meta = load_tensors(path)
    assert loaded["head.weight"] is loaded["wte.weight"]
    assert json.loads(meta["aliases"]) == {"head.weight": "wte.weight"} and meta["lmforge_format"] == "1"
    for name, t in model.state_dict().items():
        assert same(loaded[name], t), name
    fresh = TiedLM()
    fresh.load_state_dict(loaded)
    assert fresh.head.weight is fresh.wte.weight and same(fresh.wte.weight, model.wte.weight)


def test_views_at_an_offset_and_partial_overlaps_are_not_aliases(tmp_path):
    base = torch.arange(12.0)
    tensors = {"low": base[:6], "high": base[6:],  # same storage, shape, strides, dtype; offsets differ
               "all": base, "all_again": base, "grid_row": base.view(3, 4)[0], "first4": base[:4],
               "as_int": base.view(torch.int32)}
    path = save_tensors(tmp_path / "t.safetensors", tensors)
    loaded, meta = load_tensors(path)
    assert json.loads(meta["aliases"]) == {"all_again": "all", "first4": "grid_row"}  # the very same views only
    assert loaded["high"] is not loaded["low"] and loaded["all_again"] is loaded["all"]
    for name, t in tensors.items():
        assert same(loaded[name], t), name


def test_non_contiguous_tensors_are_stored_as_copies(tmp_path):
    m = torch.arange(24.0).view(4, 6)
    tensors = {"t": m.t(), "strided": m[:, ::2], "m": m}
    loaded, _ = load_tensors(save_tensors(tmp_path / "t.safetensors", tensors))
    for name, t in tensors.items():
        assert same(loaded[name], t) and loaded[name].is_contiguous(), name
    assert m.shape == (4, 6) and not m.t().is_contiguous()  # the caller's tensors are untouched


def test_empty_tensors_are_stored_and_never_aliases(tmp_path):
    tensors = {"a": torch.zeros(0), "b": torch.zeros(0), "c": torch.ones(2)}
    loaded, meta = load_tensors(save_tensors(tmp_path / "t.safetensors", tensors))
    assert "aliases" not in meta and set(loaded) == {"a", "b", "c"} and loaded["a"].numel() == 0


def test_files_written_the_old_ways_load(tmp_path):
    """The previous checkpoint and quantize writers: one stored name, ``aliases`` as JSON
    {alias: stored}, ``lmforge_format`` "1"; safetensors.torch.save_model: {removed: kept}."""
    w, codes = torch.randn(5, 3), torch.randint(-8, 8, (5, 3), dtype=torch.int8)
    save_file({"wte.weight": w, "ln.weight": torch.ones(3)}, str(tmp_path / "ckpt.safetensors"),
              metadata={"lmforge_format": "1", "aliases": json.dumps({"head.weight": "wte.weight"})})
    save_file({"emb.weight_q": codes}, str(tmp_path / "quant.safetensors"),
              metadata={"lmforge_format": "1", "lmforge_quantization": "int8",
                        "aliases": json.dumps({"head.weight_q": "emb.weight_q"})})
    save_file({"wte.weight": w}, str(tmp_path / "save_model.safetensors"), metadata={"head.weight": "wte.weight"})
    ckpt, _ = load_tensors(tmp_path / "ckpt.safetensors")
    assert ckpt["head.weight"] is ckpt["wte.weight"] and same(ckpt["wte.weight"], w)
    quant, meta = load_tensors(tmp_path / "quant.safetensors")
    assert quant["head.weight_q"] is quant["emb.weight_q"] and same(quant["emb.weight_q"], codes)
    assert meta["lmforge_quantization"] == "int8"
    theirs, _ = load_tensors(tmp_path / "save_model.safetensors")
    assert theirs["head.weight"] is theirs["wte.weight"]


def test_loaded_tensors_are_64_byte_aligned(tmp_path):
    """safetensors places data right after its header, at any offset; odd-sized int8 tensors
    make every later one unaligned in the file."""
    tensors = {f"t{i}": torch.randint(-128, 127, (i + 1, 7), dtype=torch.int8) for i in range(8)}
    loaded, _ = load_tensors(save_tensors(tmp_path / "t.safetensors", tensors))
    for name, t in loaded.items():
        assert t.data_ptr() % ALIGNMENT == 0, name
        assert same(t, tensors[name])


@pytest.mark.parametrize("damage", ["missing", "truncated", "bad aliases", "alias to nothing"])
def test_an_unreadable_file_is_a_one_line_user_error_with_the_callers_fix(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    if damage != "missing":
        metadata = {"bad aliases": {"aliases": "[1, 2]"}, "alias to nothing": {"aliases": '{"b": "zz"}'}}
        save_file({"a": torch.ones(4)}, str(path), metadata=metadata.get(damage))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError) as e:
        load_tensors(path, what="unreadable weights file", fix="quantize the run again")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unreadable weights file: ") and str(path) in msg
    assert msg.endswith("; quantize the run again")


def test_a_failed_tensor_write_is_an_os_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError; the writer raises ENOSPC."""
    import safetensors.torch

    class SafetensorError(Exception):
        pass

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as e, atomic_file(tmp_path / "model.safetensors") as tmp:
        save_tensors(tmp, {"a": torch.ones(2)})
    assert e.value.errno == 28 and e.value.filename == str(temp_path(tmp_path / "model.safetensors"))
    assert entries(tmp_path) == []
