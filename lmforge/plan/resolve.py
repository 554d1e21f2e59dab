"""Turn what a user types (a preset, a parameter count, GPUs) into planner objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path

from lmforge.errors import UserError, check_positive, unknown_name
from lmforge.plan.hardware import GPU, parse_cluster
from lmforge.plan.presets import get_preset
from lmforge.plan.shapes import shape_for_params
from lmforge.plan.specs import ModelSpec
from lmforge.plan.units import format_count, parse_bytes, parse_count


@dataclass(frozen=True)
class ResolvedModel:
    """A spec with the name to print and how it was obtained."""

    name: str
    spec: ModelSpec
    note: str | None = None  # set when the shape was synthesised from a count


def resolve_model(model: str | None, params: str | float | None, *, style: str = "llama") -> ResolvedModel:
    """A preset by name, a spec file (``.yaml``/``.yml``/``.json`` with ModelSpec
    fields), or a decoder shape for a bare parameter count (``shapes``).

    Exactly one of ``model`` and ``params`` must be given.
    """
    if model is not None and params is not None:
        raise UserError("give a model preset or --params, not both", f"{model} and {params}", "drop one of them")
    if model is not None and model.lower().endswith(SPEC_SUFFIXES):
        return ResolvedModel(Path(model).stem, load_spec(model))
    if model is not None:
        preset = get_preset(model)
        return ResolvedModel(preset.name, preset.spec)
    if params is None:
        raise UserError("no model given", None, "name a preset (e.g. llama-2-7b) or pass --params 7B")
    n_params = parse_count(params, "--params", upper=1e15)
    spec = shape_for_params(n_params, style=style)
    shape = f"{spec.n_decoder_layers} layers x d_model {spec.d_model}, {spec.mlp}, context {spec.context}"
    return ResolvedModel(
        f"{format_count(n_params)} ({style}-style)",
        spec,
        f"no preset: a {style}-style shape of {format_count(n_params)} parameters was assumed ({shape})",
    )


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def load_spec(path: str) -> ModelSpec:
    """A ModelSpec from a YAML or JSON file of its fields (see ``specs.ModelSpec``)."""
    file = Path(path)
    if not file.is_file():
        raise UserError("model spec file not found", path, "check the path, or name a preset such as llama-2-7b")
    import yaml  # reads JSON too (JSON is YAML)

    try:
        fields = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        fix = f"it must be UTF-8 text ({type(exc).__name__})"
        raise UserError("cannot read the model spec file", path, fix) from None
    except yaml.YAMLError as exc:
        raise UserError("the model spec file is not valid YAML or JSON", path, f"fix its syntax ({exc})") from None
    if not isinstance(fields, dict) or not fields:
        raise UserError("the model spec file holds no fields", path, "write ModelSpec fields, e.g. d_model: 768")
    known = {f.name for f in dataclass_fields(ModelSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise unknown_name("ModelSpec field", unknown[0], known)
    try:
        return ModelSpec(**fields)
    except TypeError as exc:
        raise UserError("bad value in the model spec file", path, str(exc)) from None


@dataclass(frozen=True)
class ResolvedGPUs:
    """The GPU kind, how many, and the memory each offers for the fit check."""

    gpu: GPU | None
    count: int
    capacity_bytes: int | None  # per GPU; None: no fit check

    @property
    def label(self) -> str:
        if self.gpu is None and self.capacity_bytes is None:
            return f"{self.count} GPU(s)"
        name = self.gpu.name if self.gpu is not None else "GPU"
        return f"{self.count}x {name}"


def resolve_gpus(gpus: str | None, gpu_memory: str | None, n_gpus: int | None = None) -> ResolvedGPUs:
    """'8xH100', or 'H100' with ``n_gpus``; ``gpu_memory`` ('24GiB') overrides the
    catalog's memory, or stands alone for a GPU not in the catalog."""
    gpu, count = None, 1
    if gpus is not None:
        cluster = parse_cluster(gpus)
        gpu, count = cluster.gpu, cluster.count
    if n_gpus is not None:
        if gpus is not None and re.match(r"\s*\d", gpus):
            raise UserError("the GPU count is given twice", f"{gpus} and --n-gpus {n_gpus}", "drop --n-gpus")
        count = int(check_positive("--n-gpus", n_gpus, upper=1e7))
    capacity = parse_bytes(gpu_memory, "--gpu-memory") if gpu_memory is not None else None
    if capacity is None and gpu is not None:
        capacity = gpu.memory_bytes
    return ResolvedGPUs(gpu, count, capacity)
