"""``--init-from RUN_DIR`` without a config: continue from what that run was.

A new run started from a trained one's weights (continued pretraining, quantization-aware
training) needs the same model, tokenizer and, unless told otherwise, the same data. Given
no ``--config``, the source run's ``config.yaml`` is the base; its tokenizer.json and
token shards are reused (nothing is retrained or re-tokenized); the new run goes beside
it as ``NAME-continued`` (``NAME-qat-int4`` under ``--qat int4``) unless ``--name`` says.
Every key can still be overridden on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import UserError
from lmforge.train.config import SHORTHANDS, load_config


def continuation(init_from: Path, values: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """(the config file to start from, the overrides completed with the source's data)."""
    source = Path(init_from)
    config_file = source / "config.yaml"
    if not config_file.is_file():
        raise UserError("the run to start from has no config.yaml", str(source),
                        "pass a directory written by lmforge train, or give --config")
    base = load_config(config_file)
    out = dict(values)
    keys = {SHORTHANDS.get(k.replace("-", "_"), k.replace("-", "_")) for k in out}
    if "data.tokenizer" not in keys and (source / "tokenizer.json").is_file():
        out["data.tokenizer"] = str(source / "tokenizer.json")
    if "data.shards" not in keys and "data.sources" not in keys:
        out["data.shards"] = base.data.shards or str(source / "data")
    if "name" not in keys:
        qat = next((str(v) for k, v in out.items() if k.replace("-", "_") in ("qat", "qat.precision")), "none")
        out["name"] = f"{source.name}-{'qat-' + qat if qat != 'none' else 'continued'}"
    if "out_dir" not in keys:
        out["out_dir"] = str(source.parent)
    return config_file, out
