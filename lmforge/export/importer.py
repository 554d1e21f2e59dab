"""``lmforge import HF_DIR --out RUN_DIR``: a transformers checkpoint as an lmforge run directory.

    RUN_DIR/
      config.yaml        the model as an lmforge preset with every shape field set
      tokenizer.json     the checkpoint's, unchanged
      model.safetensors  the weights under lmforge's names, fp32 (a bf16/fp16 checkpoint is
                         widened exactly), tied tensors once
      import.json        where it came from: the source, class, sha256 of config.json and
                         of each weights file, what was left out, lmforge version

The run directory is one like any other: ``eval``, ``generate``, ``quantize``, ``export``
and ``train --init-from`` (continued pretraining) take it. The source is a local
directory, or a Hugging Face Hub name (``org/name``), fetched with ``huggingface_hub``
into its cache first where there is a network: the same code path after that. Only
safetensors weights are read (``pytorch_model.bin`` is a pickle, which lmforge never
loads). The architectures: those of `lmforge.export.hf.ARCHES`; a config.json setting
lmforge cannot compute exactly is refused, as is a checkpoint whose tensors do not match
its config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge import __version__
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import UserError
from lmforge.export.hf import ARCHES
from lmforge.export.hf_arch import HFArch
from lmforge.export.weights import to_ours, used_names
from lmforge.fileio import atomic_directory, check_output, sha256_of, write_atomic
from lmforge.models.build import build_model, check_buildable
from lmforge.plan.specs import ModelSpec, param_counts
from lmforge.train.checkpoint import fit_problems, save_weights
from lmforge.train.config import load_config, save_config

IMPORT_FILE = "import.json"
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
# config.yaml model key -> the ModelSpec attribute it takes (derived shapes written out)
_MODEL_KEYS = {"d_model": "d_model", "n_heads": "n_heads", "n_kv_heads": "kv_heads", "head_dim": "d_head",
               "d_ff": "ffn", "context": "context", "mlp": "mlp", "norm": "norm", "positions": "positions",
               "bias": "bias", "tied_embeddings": "tied_embeddings", "norm_eps": "norm_eps",
               "rotary_base": "rotary_base", "n_token_types": "n_token_types", "relative_buckets": "relative_buckets"}


@dataclass
class HFImport:
    run_dir: Path
    hf_class: str
    params: int
    source: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "class": self.hf_class, "params": self.params, "source": self.source,
                "notes": self.notes}


def resolve_source(source: str) -> Path:
    """A local checkpoint directory, or a Hub name fetched into huggingface_hub's cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError("the checkpoint to import is a file, not a directory", source,
                            "pass the directory holding config.json, model.safetensors and tokenizer.json")
        return path
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise UserError("checkpoint directory not found", source,
                        "pass a local transformers directory, or a Hub name like org/model")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError("loading from the Hugging Face Hub needs huggingface_hub", source,
                        "pip install 'lmforge[hf]', or pass a local directory") from None
    try:
        return Path(snapshot_download(repo_id=source, allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated repo: one line either way
        raise UserError(f"cannot fetch {source} from the Hugging Face Hub ({type(exc).__name__})", source,
                        "check the name and the network, or download it and pass the local directory") from None


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise UserError("the checkpoint directory has no config.json", str(directory),
                        "pass a directory written by transformers' save_pretrained")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable config.json ({type(exc).__name__})", str(path), "save the model again") from None
    if not isinstance(config, dict):
        raise UserError("config.json must hold a JSON object", str(path), "save the model again")
    return config


def arch_of(config: dict, where: Path) -> HFArch:
    model_type = config.get("model_type")
    if model_type not in ARCHES:
        names = ", ".join(f"{a.model_type} ({a.hf_class})" for a in ARCHES.values())
        raise UserError("architecture not supported for import", f"model_type={model_type!r} in {where}",
                        f"lmforge imports {names}")
    arch = ARCHES[model_type]
    listed = config.get("architectures") or [arch.hf_class]
    if arch.hf_class not in listed:
        raise UserError(f"only {arch.hf_class} checkpoints of model_type {model_type} import",
                        f"architectures={listed}",
                        f"save the model as {arch.hf_class} (it holds the language-model head)")
    return arch


def spec_of(arch: HFArch, config: dict, where: Path) -> ModelSpec:
    """The ModelSpec a config.json describes; UserError when it is inconsistent or not exact."""
    try:
        spec = ModelSpec(name=arch.base_preset, **arch.spec_fields(config))
    except (TypeError, ValueError) as exc:
        raise UserError(f"inconsistent config.json ({exc})", str(where), "save the model again") from None
    except UserError as exc:
        raise UserError(f"inconsistent config.json: {exc.what}", exc.value, exc.fix) from None
    check_buildable(spec)
    arch.check(spec)
    return spec


def weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"]
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"unreadable model.safetensors.index.json ({type(exc).__name__})", str(index),
                            "save the model again") from None
        files = [directory / n for n in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UserError("a weights shard named by the index is missing", str(missing[0]), "download it too")
        return files
    if any((directory / n).is_file() for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")):
        raise UserError("the checkpoint has no safetensors weights (pytorch_model.bin is a pickle, never loaded)",
                        str(directory), "save it with model.save_pretrained(DIR) (safetensors is the default)")
    raise UserError("the checkpoint directory has no model.safetensors", str(directory),
                    "pass a directory written by transformers' save_pretrained")


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"unreadable weights file ({type(exc).__name__})", str(path), "download it again") from None
    return tensors


def run_values(spec: ModelSpec, arch: HFArch, out: Path, tokenizer_path: Path) -> dict:
    """config.yaml's dotted values: the base preset with every shape field of ``spec``."""
    values = {"name": out.name, "out_dir": str(out.parent), "model.preset": arch.base_preset,
              "data.tokenizer": str(tokenizer_path), "data.seq_len": min(spec.context, 1024)}
    values["model.n_layers"] = spec.n_encoder_layers if spec.family == "encoder" else spec.n_decoder_layers
    if spec.family == "encoder-decoder":
        values["model.n_encoder_layers"] = spec.n_encoder_layers
    values.update({f"model.{key}": getattr(spec, attr) for key, attr in _MODEL_KEYS.items()})
    return values


def import_hf(source: str, out: str | Path, *, force: bool = False) -> HFImport:
    """Import the transformers checkpoint ``source`` (directory or Hub name) as a run at ``out``."""
    out = Path(out)
    check_output(out, force=force, directory=True)
    directory = resolve_source(str(source))
    config = read_hf_config(directory)
    arch = arch_of(config, directory / "config.json")
    spec = spec_of(arch, config, directory / "config.json")
    if not (directory / "tokenizer.json").is_file():
        raise UserError("the checkpoint directory has no tokenizer.json", str(directory),
                        "save the fast tokenizer there: AutoTokenizer.from_pretrained(...).save_pretrained(DIR)")
    tokenizer = Tokenizer.load(directory / "tokenizer.json")
    if tokenizer.vocab_size != spec.vocab_size:
        raise UserError("the tokenizer and the model's vocabulary differ in size",
                        f"tokenizer {tokenizer.vocab_size}, config.json vocab_size {spec.vocab_size}",
                        "lmforge needs one embedding row per token id: import a checkpoint whose sizes agree")
    files = weight_files(directory)
    theirs = read_weights(files)
    rules = arch.rules(spec)
    wanted = used_names(rules)
    left_out = sorted(n for n in theirs if n not in wanted and arch.ignored(n, spec))
    unknown = sorted(n for n in theirs if n not in wanted and not arch.ignored(n, spec))
    if unknown:
        raise UserError(f"the checkpoint holds {len(unknown)} tensors its config.json does not describe "
                        f"(e.g. {unknown[0]})", str(directory),
                        "pass a checkpoint whose config.json matches its weights")
    arch.check_constants(theirs, str(directory))
    notes = []
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for n, t in theirs.items() if n in wanted})
    if dtypes != ["float32"]:
        notes.append(f"weights stored as {', '.join(dtypes)}, widened to float32 (exact)")
    if left_out:
        notes.append(f"left out {len(left_out)} tensors lmforge's {arch.hf_class} does not use or ties: "
                     + ", ".join(left_out[:4]) + (" ..." if len(left_out) > 4 else ""))
    ours = {name: t.to(torch.float32) for name, t in to_ours(rules, theirs, str(directory)).items()}
    model = build_model(spec)
    expected = model.state_dict()
    for name in expected:  # tied names: the tensor they are tied to
        if name not in ours and expected[name].data_ptr() == model.tok_emb.weight.data_ptr():
            ours[name] = ours["tok_emb.weight"]
    problems = fit_problems(ours, expected, "checkpoint")
    if problems:
        raise UserError("the checkpoint does not fit its config.json: " + "; ".join(problems), str(directory),
                        "pass a checkpoint whose config.json matches its weights")
    model.load_state_dict(ours, strict=True)
    with atomic_directory(out) as tmp:
        (tmp / "tokenizer.json").write_bytes((directory / "tokenizer.json").read_bytes())
        run_config = load_config(None, run_values(spec, arch, out, out / "tokenizer.json"))
        save_config(run_config, tmp / "config.yaml")
        save_weights(tmp / "model.safetensors", model)
        record = {
            "source": str(source), "directory": str(directory.resolve()), "class": arch.hf_class,
            "model_type": arch.model_type, "config_sha256": sha256_of(directory / "config.json"),
            "weights": {f.name: sha256_of(f) for f in files}, "notes": notes, "written_by": f"lmforge {__version__}",
        }
        write_atomic(tmp / IMPORT_FILE, json.dumps(record, indent=2) + "\n")
    return HFImport(out, arch.hf_class, param_counts(spec).total, str(source), notes)
