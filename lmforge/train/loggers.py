"""Metric sinks besides ``metrics.jsonl``: TensorBoard event files and Weights & Biases.

``metrics.jsonl`` (`lmforge.train.metrics.MetricsLogger`) is always written; the config's
``log`` section adds sinks (``--log.tensorboard true``, ``--log.wandb PROJECT``). Every
sink receives the very record that ``metrics.jsonl`` gets, under the same names:
``loss``, ``lr``, ``grad_norm``, ``tokens`` (seen so far), ``tokens_per_s``, ``mfu``,
``peak_memory_bytes``, ``val_loss/<source>``, ``val_bpb/<source>`` (and ``accuracy``,
``val_accuracy/<source>`` for masked LMs). Only rank 0 logs (the loop opens the sinks on
rank 0 alone).

The x-axis is the optimizer step, and tokens seen:

- TensorBoard: each value at ``global_step = step`` under its own name, and again under
  ``by_tokens/<name>`` at ``global_step = tokens`` (a TensorBoard scalar has one x-axis);
  the config once as hyperparameters (the HParams plugin) and as a YAML text. A resumed
  run opens its writer with ``purge_step`` = the checkpoint's step + 1, so TensorBoard
  drops what the interrupted run logged after it, as ``metrics.jsonl`` does.
- W&B: ``step`` and ``tokens`` are logged as metrics and declared the step metrics
  (``wandb.define_metric``), so the W&B UI offers either as the x-axis; the config is the
  run's ``config``. The W&B run id is kept in ``RUN_DIR/wandb-run-id``, so a resumed run
  continues the same W&B run. W&B runs online when the environment says so
  (``WANDB_MODE``) or when credentials exist and the server answers; otherwise offline,
  saying so (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later).

The extras are imported only when asked for; a missing one is a one-line error naming
the extra, raised before anything is built (`check_log_config`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from lmforge.errors import UserError
from lmforge.fileio import write_atomic

TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb-run-id"
BY_TOKENS = "by_tokens/"
_WANDB_FORBIDDEN = "/\\#?%:"  # characters W&B refuses in a project name
_NOT_METRICS = ("step", "time")  # the x-axis and the wall clock: not plotted as values


class MetricSink(Protocol):
    def log(self, step: int, record: Mapping[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def check_log_config(log_config) -> None:
    """UserError for a W&B project name W&B refuses, or naming the extra when a sink the
    config asks for is not installed."""
    if log_config.wandb is not None:
        bad = [c for c in _WANDB_FORBIDDEN if c in log_config.wandb]
        if not log_config.wandb.strip() or bad or len(log_config.wandb) > 128:
            raise UserError("log.wandb must be a W&B project name: 1 to 128 characters, none of " + _WANDB_FORBIDDEN,
                            log_config.wandb, "pass e.g. --log.wandb my-project")
    if log_config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("TensorBoard logging needs the tensorboard package", "log.tensorboard=true",
                        "pip install 'lmforge[tensorboard]', or drop --log.tensorboard")
    if log_config.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("Weights & Biases logging needs the wandb package", f"log.wandb={log_config.wandb}",
                        "pip install 'lmforge[wandb]', or drop --log.wandb")


def open_sinks(config, run_dir: Path, *, resume_step: int | None, log: Callable[[str], None]) -> list[MetricSink]:
    """The sinks ``config.log`` asks for, opened for ``run_dir`` (a `RunConfig`; rank 0 only).
    ``resume_step``: the checkpoint's step when the run resumes, else None."""
    check_log_config(config.log)
    sinks: list[MetricSink] = []
    try:
        if config.log.tensorboard:
            sinks.append(TensorBoardSink(run_dir, config, resume_step))
        if config.log.wandb:
            sinks.append(WandbSink(run_dir, config, resume_step, log))
    except BaseException:
        close_all(sinks)
        raise
    return sinks


def close_all(sinks: list[MetricSink], failed: bool = True) -> None:
    for sink in sinks:
        sink.close(failed)


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's finite numbers by name, without ``step`` and ``time`` (a diverged loss,
    written as null to metrics.jsonl, is left out rather than plotted as zero)."""
    out = {}
    for name, value in record.items():
        if name in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


def hyperparameters(config) -> dict[str, Any]:
    """The run config flattened to dotted keys with scalar values (None as "none", lists
    as text): what TensorBoard's HParams plugin and W&B's config take."""
    from lmforge import configs

    flat = {}
    for key, value in configs.flatten(config.to_dict()).items():
        if value is None:
            value = "none"
        elif not isinstance(value, (bool, int, float, str)):
            value = str(value)
        flat[key] = value
    return flat


class TensorBoardSink:
    """Event files under ``RUN_DIR/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``)."""

    def __init__(self, run_dir: Path, config, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge, flush_secs=30)
        if resume_step is None:  # once per run
            self._log_config(config)

    def _log_config(self, config) -> None:
        from torch.utils.tensorboard.summary import hparams

        from lmforge import configs

        # the three HParams summaries written into this writer's own file (SummaryWriter.add_hparams
        # would open a second run directory for them)
        for summary in hparams(hyperparameters(config), {"loss": math.nan}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```yaml\n" + configs.to_yaml(config) + "```", global_step=0)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        walltime = record.get("time")
        tokens = record.get("tokens")
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, global_step=step, walltime=walltime)
            if tokens is not None and name != "tokens":
                self.writer.add_scalar(BY_TOKENS + name, value, global_step=int(tokens), walltime=walltime)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per lmforge run (`WANDB_ID_FILE` keeps its id across resumes)."""

    def __init__(self, run_dir: Path, config, resume_step: int | None, log: Callable[[str], None]):
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None
        if not run_id:
            run_id = secrets.token_hex(8)  # W&B ids: letters and digits, unique in the project
            write_atomic(id_file, run_id + "\n")
        mode = _wandb_mode(wandb, log)
        kwargs = dict(project=config.log.wandb, entity=config.log.wandb_entity,
                      name=config.log.wandb_name or config.name, dir=str(run_dir), id=run_id, resume="allow",
                      config=hyperparameters(config))
        settings = dict(console="off", silent=True, disable_git=True, save_code=False, init_timeout=30)
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(**settings), **kwargs)
        except Exception as exc:  # the server did not answer, or refused the credentials
            if mode != "online" or os.environ.get("WANDB_MODE"):
                raise UserError("Weights & Biases did not start", f"{type(exc).__name__}: {exc}",
                                "check WANDB_MODE and the W&B settings, or drop --log.wandb") from None
            log(f"W&B online failed ({type(exc).__name__}); logging offline under {run_dir / 'wandb'} "
                "(upload later with wandb sync)")
            self.run = wandb.init(mode="offline", settings=wandb.Settings(**settings), **kwargs)
        self.run.define_metric("step")
        self.run.define_metric("tokens")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self.run.log({"step": step, **scalars(record)})

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def _wandb_mode(wandb, log: Callable[[str], None]) -> str:
    """``WANDB_MODE`` when set; else online where credentials exist, offline (said) where not."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if wandb.login(prompt=False, verify=False):
        return "online"
    log("W&B: no credentials (WANDB_API_KEY or wandb login); logging offline (upload later with wandb sync)")
    return "offline"
