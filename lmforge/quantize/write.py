"""Write a quantized run directory atomically.

    runs/NAME-int4-g32/
      config.yaml         the source's, with data.shards pointing at the source's shards
      tokenizer.json      the source's
      model.safetensors   quantized tensors (codes, scales, zeros) and 16-bit kept tensors
      quantization.json   the scheme, what was kept at 16 bits, the source and its sha256

Everything is written into ``.tmp-NAME-<pid>/`` next to the target and renamed onto it
(``rename`` is atomic on POSIX; Pillai et al., OSDI 2014, Sec. 2): an error or a kill
leaves no half-written directory, and ``--force`` swaps an existing one only at the end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from torch import nn

from lmforge import __version__
from lmforge.fileio import atomic_directory, check_output, sha256_of
from lmforge.quantize.convert import QUANTIZED_MODULES, Scheme
from lmforge.quantize.load import QUANT_FILE, QUANT_FORMAT
from lmforge.runs import LoadedRun
from lmforge.tensorfile import save_tensors
from lmforge.train.config import save_config


def default_out(run_dir: Path, scheme: Scheme) -> Path:
    """``runs/NAME`` -> ``runs/NAME-int4-g32`` (a sibling)."""
    return run_dir.parent / f"{run_dir.name}-{scheme.label}"


def kept_and_quantized(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names of tensors kept at 16 bits, names of the quantized modules)."""
    quantized = [name for name, m in model.named_modules() if isinstance(m, QUANTIZED_MODULES)]
    inside = tuple(f"{name}." for name in quantized)
    state = model.state_dict()
    kept = [name for name, t in state.items() if not name.startswith(inside) and t.is_floating_point()]
    quant_biases = [name for name in state if name.startswith(inside) and name.endswith(".bias")]
    return sorted(kept + quant_biases), quantized


def write_quantized_run(source: LoadedRun, model: nn.Module, scheme: Scheme, out: Path, *, force: bool = False,
                        extra: dict | None = None) -> Path:
    """Write ``model`` (converted by `quantize_model`) as a run directory at ``out``; return it."""
    out = Path(out)
    check_output(out, force=force, directory=True, source=source.run_dir)
    with atomic_directory(out) as tmp:
        config = source.config
        shards = Path(config.data.shards) if config.data.shards else source.run_dir / "data"
        data = dataclasses.replace(config.data, shards=str(shards.resolve()) if shards.is_dir() else config.data.shards)
        save_config(dataclasses.replace(config, name=out.name, out_dir=str(out.parent), data=data),
                    tmp / "config.yaml")
        shutil.copyfile(source.run_dir / "tokenizer.json", tmp / "tokenizer.json")
        save_tensors(tmp / "model.safetensors", model.state_dict(),
                     {"lmforge_format": "1", "lmforge_quantization": scheme.label})
        kept, quantized = kept_and_quantized(model)
        info = {
            "format": QUANT_FORMAT,
            "scheme": scheme.to_dict(),
            "label": scheme.label,
            "compute_dtype": str(scheme.dtype).removeprefix("torch."),
            "kept_16bit": kept if scheme.quantized else [],
            "quantized": quantized,
            "source": {"run_dir": str(source.run_dir.resolve()), "weights": str(Path(source.weights).resolve()),
                       "sha256": sha256_of(Path(source.weights))},
            "written_by": f"lmforge {__version__}",
            **(extra or {}),
        }
        (tmp / QUANT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out
