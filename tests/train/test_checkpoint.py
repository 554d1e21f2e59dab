"""Checkpoints: bit-exact round trip and resume, pruning, tied weights, crash safety, errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lmforge.errors import UserError
from lmforge.fileio import remove_stale_temp_files
from lmforge.tensorfile import save_tensors
from lmforge.train import checkpoint as ck
from lmforge.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def make_model(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, hidden), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.LayerNorm(hidden),
        torch.nn.Linear(hidden, 4),
    )  # fmt: skip


def make_optimizer(model: torch.nn.Module, kind: str = "adamw") -> torch.optim.Optimizer:
    """Two parameter groups (weight decay on matrices only), as the training loop builds them."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95))
    if kind == "adam-amsgrad":
        return torch.optim.Adam(groups, lr=1e-2, amsgrad=True)
    return torch.optim.SGD(groups, lr=1e-2, momentum=0.9, nesterov=True)


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """Batches and dropout masks come from the global RNG, so resume must restore it."""
    model.train()
    for _ in range(steps):
        x = torch.randn(32, 8)
        y = torch.randn(32, 4)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def assert_same_tensor(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert torch.equal(a, b), f"{what}: values differ"


def assert_same(a: object, b: object, what: str = "state_dict") -> None:
    """Structural equality, tensors bit for bit with their dtypes, tuples stay tuples."""
    assert type(a) is type(b), f"{what}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert_same_tensor(a, b, what)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{what}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{what}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


@pytest.mark.parametrize("kind", ["adamw", "adam-amsgrad", "sgd"])
def test_round_trip_is_bit_exact(tmp_path, kind):
    model = make_model(0)
    opt = make_optimizer(model, kind)
    train(model, opt, 2)
    path = save_checkpoint(tmp_path, 2, model, opt, {"tokens": 64, "data": {"seed": 0, "position": 2}})
    expected_rand = (torch.rand(5), random.random(), np.random.rand())

    fresh = make_model(1)
    fresh_opt = make_optimizer(fresh, kind)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)  # scramble every RNG
    state = load_checkpoint(tmp_path, fresh, fresh_opt)

    assert state == {"step": 2, "tokens": 64, "data": {"seed": 0, "position": 2}}
    assert path == tmp_path / "checkpoints" / "step-000002"
    assert_same(fresh.state_dict(), model.state_dict(), "model")
    assert_same(fresh_opt.state_dict(), opt.state_dict(), "optimizer")
    if kind != "sgd":
        assert fresh_opt.state_dict()["state"][0]["step"].dtype == torch.float32
        assert isinstance(fresh_opt.state_dict()["param_groups"][0]["betas"], tuple)
    rand = torch.rand(5), random.random(), np.random.rand()
    assert_same_tensor(rand[0], expected_rand[0], "torch.rand after load")
    assert rand[1:] == expected_rand[1:]


def test_resume_gives_bit_identical_weights(tmp_path):
    """3 steps, save, 3 more == load the save into a fresh model, 3 more (dropout on, data from the RNG)."""
    model = make_model(0)
    opt = make_optimizer(model)
    train(model, opt, 3)
    save_checkpoint(tmp_path, 3, model, opt, {"tokens": 96})
    train(model, opt, 3)

    resumed = make_model(7)
    resumed_opt = make_optimizer(resumed)
    torch.manual_seed(999)
    assert load_checkpoint(tmp_path, resumed, resumed_opt)["step"] == 3
    train(resumed, resumed_opt, 3)

    assert_same(resumed.state_dict(), model.state_dict(), "weights after resume")
    assert_same(resumed_opt.state_dict(), opt.state_dict(), "optimizer after resume")


def test_bf16_weights_and_optimizer_keep_their_dtypes(tmp_path):
    model = make_model(0).to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.randn(4, 8, dtype=torch.bfloat16)).float().square().mean()
    loss.backward()
    opt.step()
    save_checkpoint(tmp_path, 1, model, opt, {})
    fresh = make_model(1).to(torch.bfloat16)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    load_checkpoint(tmp_path, fresh, fresh_opt)
    assert_same(fresh.state_dict(), model.state_dict(), "model")
    assert_same(fresh_opt.state_dict(), opt.state_dict(), "optimizer")
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].dtype == torch.bfloat16


class TiedLM(torch.nn.Module):
    """GPT-2 style: the output projection is the token embedding (one shared tensor)."""

    def __init__(self, vocab: int = 11, d: int = 6):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.wte(idx)))  # (B, T, V)


def test_tied_embeddings_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = model(torch.randint(0, 11, (2, 5))).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = save_checkpoint(tmp_path, 2, model, opt, {})
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["head.weight", "ln.bias", "ln.weight"] or sorted(f.keys()) == [
            "ln.bias", "ln.weight", "wte.weight"
        ]  # fmt: skip
        assert "aliases" in f.metadata()

    torch.manual_seed(5)
    fresh = TiedLM()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    load_checkpoint(tmp_path, fresh, fresh_opt)
    assert fresh.head.weight is fresh.wte.weight  # still tied
    assert_same(fresh.state_dict(), model.state_dict(), "tied model")
    assert_same(fresh_opt.state_dict(), opt.state_dict(), "tied optimizer")


def test_weights_files_interoperate_with_safetensors_save_model(tmp_path):
    """save_weights files load with safetensors' load_model and vice versa (tied names differ)."""
    from safetensors.torch import load_model, save_model

    torch.manual_seed(0)
    model = TiedLM()
    ck.save_weights(tmp_path / "ours.safetensors", model)
    save_model(model, str(tmp_path / "theirs.safetensors"))
    torch.manual_seed(1)
    with_theirs, with_ours = TiedLM(), TiedLM()
    load_model(with_theirs, str(tmp_path / "ours.safetensors"))  # their loader, our file
    ck.load_weights(tmp_path / "theirs.safetensors", with_ours)  # our loader, their file
    for fresh in (with_theirs, with_ours):
        assert fresh.head.weight is fresh.wte.weight
        assert_same(fresh.state_dict(), model.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.safetensors", "theirs.safetensors"]  # no temp files
    with pytest.raises(UserError, match="weights file not found"):
        ck.load_weights(tmp_path / "missing.safetensors", model)


def test_weights_file_stores_each_shared_tensor_once_and_copies_partial_overlaps(tmp_path):
    base = torch.arange(12.0)
    tensors = {"a": base, "a_again": base, "first_half": base[:6], "strided": base[::2], "other": torch.ones(3)}
    save_tensors(tmp_path / "t.safetensors", tensors, {})
    loaded, meta = ck._read_tensors(tmp_path / "t.safetensors", "cpu")
    for k, v in tensors.items():
        assert_same_tensor(loaded[k], v, k)
    assert loaded["a_again"] is loaded["a"]
    assert "a_again" in meta["aliases"]


def test_compiled_model_wrapper_saves_plain_names(tmp_path):
    model = make_model(0)
    save_checkpoint(tmp_path, 1, torch.compile(model), None, {})  # wrapper only: nothing is compiled
    fresh = make_model(1)
    load_checkpoint(tmp_path, fresh)
    assert_same(fresh.state_dict(), model.state_dict())


def test_keep_last_prunes_old_checkpoints_but_never_latest(tmp_path):
    model = make_model(0)
    opt = make_optimizer(model)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step * 100, model, opt, {}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000400", "step-000500"]
    assert (tmp_path / "latest").read_text().strip() == "checkpoints/step-000500"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-000500"

    save_checkpoint(tmp_path, 50, model, opt, {}, keep_last=1)  # older step number, but latest
    assert latest_checkpoint(tmp_path).name == "step-000050"
    assert (tmp_path / "checkpoints" / "step-000050").is_dir()

    save_checkpoint(tmp_path, 600, model, opt, {}, keep_last=None)
    assert len(ck.list_checkpoints(tmp_path)) == 3


def test_resaving_a_step_replaces_it(tmp_path):
    model = make_model(0)
    save_checkpoint(tmp_path, 3, model, None, {"tokens": 1})
    save_checkpoint(tmp_path, 3, model, None, {"tokens": 2})
    assert load_checkpoint(tmp_path, make_model(1))["tokens"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000003"]


def test_stale_tmp_dirs_are_ignored_on_load_and_removed_on_save(tmp_path):
    model = make_model(0)
    save_checkpoint(tmp_path, 1, model, None, {})
    dead_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = tmp_path / "checkpoints" / f".tmp-step-000002-{dead_pid}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00" * 10)
    assert latest_checkpoint(tmp_path).name == "step-000001"
    assert load_checkpoint(tmp_path, make_model(1))["step"] == 1
    save_checkpoint(tmp_path, 2, model, None, {})
    assert not stale.exists()


def test_latest_falls_back_to_newest_complete_checkpoint(tmp_path):
    model = make_model(0)
    save_checkpoint(tmp_path, 1, model, None, {}, keep_last=None)
    save_checkpoint(tmp_path, 2, model, None, {}, keep_last=None)
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-000002"
    (tmp_path / "latest").write_text("../../elsewhere\n")  # outside the run: ignored
    assert latest_checkpoint(tmp_path).name == "step-000002"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_unserialisable_state_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 1, make_model(0), None, {"bad": object()})
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, 1, make_model(0), None, {"loss": float("nan")})
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    assert not (tmp_path / "latest").exists()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and ";" in msg, msg  # what (value); fix
    return msg


def test_errors_are_one_line_user_errors(tmp_path):
    model = make_model(0)
    opt = make_optimizer(model)
    with pytest.raises(UserError, match="run directory not found") as e:
        load_checkpoint(tmp_path / "nope", model)
    one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint") as e:
        load_checkpoint(tmp_path / "empty", model)
    one_line(e)

    path = save_checkpoint(tmp_path / "run", 1, model, opt, {})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # differs from the checkpoint now: a half-applied load would show
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="does not fit the model.*shape") as e:
        load_checkpoint(tmp_path / "run", make_model(0, hidden=32))
    one_line(e)
    with pytest.raises(UserError, match="2 missing tensors .e.g. 5.weight, 5.bias") as e:
        load_checkpoint(tmp_path / "run", torch.nn.Sequential(*make_model(0), torch.nn.Linear(4, 4)))
    one_line(e)
    other_opt = torch.optim.AdamW(model.parameters())  # one group instead of two
    with pytest.raises(UserError, match="optimizer does not fit") as e:
        load_checkpoint(tmp_path / "run", model, other_opt)
    one_line(e)
    assert_same(dict(model.state_dict()), before, "model untouched by a failed load")

    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError, match="corrupt checkpoint file") as e:
        load_checkpoint(tmp_path / "run", model)
    one_line(e)
    (path / "model.safetensors").write_bytes(data)
    (path / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt checkpoint file") as e:
        load_checkpoint(path, model, opt)
    one_line(e)
    with pytest.raises(UserError, match="keep_last"):
        save_checkpoint(tmp_path / "run", 2, model, opt, {}, keep_last=0)


# --------------------------------------------------------------------------- crash safety

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import torch
    from lmforge import tensorfile
    from lmforge.fileio import temp_path
    from lmforge.train import checkpoint as ck

    run, mode = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.Linear(2048, 512))  # 2.1M params
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 512)).square().mean().backward()
    opt.step()
    ck.save_checkpoint(run, 1, model, opt, {"tokens": 1})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def hang():
        (run / "ready").write_text("x")
        time.sleep(60)

    if mode == "mid-file":  # killed with optimizer.safetensors half written
        real = tensorfile.save_safetensors
        def partial(tensors, filename, metadata=None):
            real(tensors, filename, metadata)
            if str(filename).endswith("optimizer.safetensors"):
                os.truncate(filename, os.path.getsize(filename) // 2)
                hang()
        tensorfile.save_safetensors = partial
    elif mode == "before-latest":  # killed after the rename, with latest's temp file half written
        real_text = ck.write_atomic
        def partial_text(path, text):
            if Path(path).name == "latest":
                temp_path(Path(path)).write_text(text[:8])
                hang()
            return real_text(path, text)
        ck.write_atomic = partial_text
    ck.save_checkpoint(run, 2, model, opt, {"tokens": 2})
    (run / "finished").write_text("x")
    """
)


def run_writer(run: Path, mode: str, kill_when) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run), mode], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not kill_when() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL or (run / "finished").exists(), stderr


def writer_model(trained: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The writer's model and optimizer, after its step 1 when ``trained`` (else a fresh init)."""
    torch.manual_seed(0 if trained else 1)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.Linear(2048, 512))
    opt = torch.optim.AdamW(model.parameters())
    if trained:
        model(torch.randn(4, 512)).square().mean().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("mode", ["mid-file", "before-latest"])
def test_sigkill_while_writing_leaves_latest_on_previous_checkpoint(tmp_path, mode):
    run = tmp_path / "run"
    run_writer(run, mode, kill_when=lambda: (run / "ready").exists())
    assert not (run / "finished").exists()
    assert (run / "latest").read_text().strip() == "checkpoints/step-000001"
    if mode == "mid-file":
        assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
        assert not (run / "checkpoints" / "step-000002").exists()
    else:
        assert (run / "checkpoints" / "step-000002").is_dir()  # complete, but not yet latest
        [latest_tmp] = run.glob(".latest.tmp-*")
        assert latest_tmp.read_text() == "checkpoi"

    model, opt = writer_model(trained=False)
    ref_model, ref_opt = writer_model(trained=True)
    assert load_checkpoint(run, model, opt) == {"step": 1, "tokens": 1}
    assert_same(model.state_dict(), ref_model.state_dict(), "weights of step 1")
    assert_same(opt.state_dict(), ref_opt.state_dict(), "optimizer of step 1")

    save_checkpoint(run, 3, model, opt, {})  # the next save cleans up after the dead writer
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    remove_stale_temp_files(run)  # as the next `lmforge train` does on start (lmforge.train.loop)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_sigkill_at_first_sight_of_the_tmp_dir_never_breaks_latest(tmp_path):
    """Unpatched writer, killed as soon as its temp directory appears: whatever the moment,
    ``latest`` names a complete checkpoint that loads, and no ``step-*`` directory is partial."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"

    def tmp_dir_of_step_2() -> bool:
        return ckpts.is_dir() and any(p.name.startswith(".tmp-step-000002") for p in ckpts.iterdir())

    run_writer(run, "plain", kill_when=tmp_dir_of_step_2)
    latest = latest_checkpoint(run)
    assert latest is not None and latest.parent == ckpts
    assert (run / "latest").read_text().strip() == f"checkpoints/{latest.name}"
    for p in (q for q in ckpts.iterdir() if q.name.startswith("step-")):
        assert sorted(f.name for f in p.iterdir()) == [
            "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors", "state.json"
        ]  # fmt: skip
    model, opt = writer_model(trained=False)
    assert load_checkpoint(run, model, opt)["step"] in (1, 2)
