"""``lmforge quantize``: quantize a run, write it, load it back, and measure before and after.

Before and after are measured the same way: the bytes of ``model.safetensors`` on disk
(all of it, header included), the bytes of every parameter and buffer of the model once
loaded (``load_run``; shared tensors once), the planner's prediction
(``lmforge.plan.storage.weight_bytes``, what ``lmforge memory`` prints), and quality on
the same held-out tokens (`lmforge.quantize.quality`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.errors import UserError, check_whole
from lmforge.fileio import check_output
from lmforge.plan.storage import weight_bytes
from lmforge.quantize.convert import Scheme, dequantize_model, make_scheme, model_bytes, quantize_model
from lmforge.quantize.load import read_quantization, scheme_of
from lmforge.quantize.quality import DEFAULT_EVAL_TOKENS, evaluate, held_out_streams, input_importance
from lmforge.quantize.write import default_out, write_quantized_run
from lmforge.runs import load_run
from lmforge.train.validation import EvalResult


@dataclass
class Side:
    """One model's measurements."""

    label: str
    file_bytes: int
    memory_bytes: int  # as loaded here
    planner_bytes: int  # the planner's bytes of the weights as written (the file's tensor data)
    planner_memory_bytes: int  # the planner's bytes as loaded here (kept tensors in fp32 where they compute so)
    result: EvalResult

    def to_dict(self) -> dict:
        quality = {k: v for k, v in self.result.to_dict().items() if k in ("tokens", "loss", "perplexity",
                                                                             "bits_per_byte")}
        return {"label": self.label, "file_bytes": self.file_bytes, "memory_bytes": self.memory_bytes,
                "planner_bytes": self.planner_bytes, "planner_memory_bytes": self.planner_memory_bytes, **quality}


@dataclass
class QuantizeReport:
    source: Path
    out: Path
    scheme: Scheme
    held_out: str  # what the quality was measured on
    before: Side
    after: Side
    seconds: float
    int4_layout: str | None  # "cpu-int4pack" (PyTorch's bf16 CPU kernel), "plain", or None (not int4)
    compute: str  # how the quantized run computes on this machine (lmforge.quantize.paths)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "out": str(self.out), "scheme": self.scheme.to_dict(),
                "label": self.scheme.label, "held_out": self.held_out, "before": self.before.to_dict(),
                "after": self.after.to_dict(), "seconds": self.seconds, "int4_layout": self.int4_layout,
                "compute": self.compute}


def quantize_run(run_dir: str | Path, precision: str, *, group_size: int | None = None, scale: str = "absmax",
                 keep_embeddings: bool = True, calibration: str | Path | None = None, out: str | Path | None = None,
                 force: bool = False, max_tokens: int = DEFAULT_EVAL_TOKENS) -> QuantizeReport:
    """Quantize RUN_DIR to ``precision``, write the result (default RUN_DIR-<label>), measure both."""
    started = time.perf_counter()
    _check_options_apply(precision, group_size, scale, keep_embeddings)
    check_whole("--max-tokens", max_tokens, 10**12)
    scheme = make_scheme(precision, group_size, scale, keep_embeddings)  # bad flags fail before any work
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found", str(run_dir), "pass the RUN_DIR that lmforge train wrote")
    if precision == "int4" and group_size is None:
        scheme = make_scheme(precision, _qat_group_size(run_dir), scale, keep_embeddings)
    info = read_quantization(run_dir)
    if info is not None and not force:
        raise UserError("the run is quantized already", f"{run_dir} ({info.get('label', '?')})",
                        "quantize the original run (its path is in quantization.json), or pass --force to "
                        "quantize these weights again (errors add up)")
    out = Path(out) if out is not None else default_out(run_dir, scheme)
    check_output(out, force=force, directory=True, source=run_dir)
    source = load_run(run_dir, layout="plain")
    before_scheme = scheme_of(info) if info is not None else make_scheme("fp32")
    before_label = before_scheme.label
    before_memory = model_bytes(source.model)
    before_planner = _planned(source.spec, before_scheme)
    if info is not None:
        dequantize_model(source.model)
    streams = held_out_streams(source, calibration, max_tokens)
    held_out = (f"calibration text {calibration}" if calibration is not None
                else "validation split of " + ", ".join(streams))
    before = evaluate(source.model, source, streams)
    importance = None
    if scheme.quantized and scheme.scale_method == "mse" and calibration is not None:
        importance = input_importance(source.model, source, streams)
    model = quantize_model(source.model, scheme, importance)
    written = write_quantized_run(source, model, scheme, out, force=force, extra={
        "calibration": None if calibration is None else {"path": str(Path(calibration).resolve()),
                                                         "tokens": int(sum(len(s) for s in streams.values()))},
    })
    model = source.model = None  # free the float weights before loading the written run
    loaded = load_run(written)
    after = evaluate(loaded.model, loaded, streams)
    layouts = {getattr(m, "layout", None) for m in loaded.model.modules()} - {None}
    int4_layout = None if scheme.precision != "int4" else ("cpu-int4pack" if "cpu-int4pack" in layouts else "plain")
    return QuantizeReport(
        source=run_dir, out=written, scheme=scheme, held_out=held_out,
        before=Side(before_label, Path(source.weights).stat().st_size, before_memory, before_planner, before_planner,
                    before),
        after=Side(scheme.label, (written / "model.safetensors").stat().st_size, model_bytes(loaded.model),
                   _planned(loaded.spec, scheme), _planned(loaded.spec, scheme, _kept_dtype(loaded.model)), after),
        seconds=time.perf_counter() - started, int4_layout=int4_layout, compute=loaded.compute,
    )


def _check_options_apply(precision: str, group_size: int | None, scale: str, keep_embeddings: bool) -> None:
    """Refuse flags that mean nothing for ``precision`` (rather than ignore them)."""
    if group_size is not None and precision != "int4":
        raise UserError("--group-size applies to int4 only", f"--to {precision} --group-size {group_size}",
                        "drop --group-size, or use --to int4")
    if precision not in ("int8", "int4"):
        if scale != "absmax":
            raise UserError("--scale applies to int8 and int4 only", f"--to {precision} --scale {scale}",
                            "drop --scale for a 16-bit cast")
        if not keep_embeddings:
            raise UserError("--no-keep-embeddings applies to int8 and int4 only", f"--to {precision}",
                            "drop --no-keep-embeddings for a 16-bit cast")


def _qat_group_size(run_dir: Path) -> int | None:
    """The group size an int4 quantization-aware run trained with (so that quantizing it
    reproduces the weights training saw), else None."""
    from lmforge.train.config import load_config

    if not (run_dir / "config.yaml").is_file():
        return None
    qat = load_config(run_dir / "config.yaml").qat
    return qat.group_size if qat.precision == "int4" else None


def _kept_dtype(model) -> torch.dtype:
    """The dtype the loaded model keeps its float (not quantized) tensors in."""
    floats = [t.dtype for t in [*model.parameters(), *model.buffers()] if t is not None and t.is_floating_point()
              and t.dtype != torch.float16]  # fp16 are the quantized linears' scales
    return floats[0] if floats else torch.bfloat16


def _planned(spec, scheme: Scheme, kept: torch.dtype = torch.bfloat16) -> int:
    """The planner's bytes of the model as loaded here: kept tensors in ``kept``."""
    if not scheme.quantized:
        return weight_bytes(spec, "fp32" if kept == torch.float32 else scheme.precision)
    return weight_bytes(spec, scheme.precision, scheme.group_size or 128, scheme.keep_embeddings,
                        kept_bytes=4 if kept == torch.float32 else 2)
