"""``lmforge export RUN_DIR --to hf``: a directory transformers loads with no extra code.

    OUT/
      config.json             the architecture's config (`lmforge.export.hf_arch`), dropout 0
      generation_config.json  bos / eos / pad / decoder start (generative classes)
      model.safetensors       the weights under transformers' names, fp32, tied tensors once
      tokenizer.json          lmforge's tokenizer, unchanged (PreTrainedTokenizerFast reads it)
      tokenizer_config.json   class, special tokens, model_max_length
      special_tokens_map.json
      README.md               model card: data, tokens, loss, lmforge version

Which class: a decoder with learned positions is GPT-2, with rotary positions Llama; an
encoder is BERT; an encoder-decoder with T5 relative positions is T5, with learned ones
BART. A spec the class cannot express exactly is refused naming the field
(`HFArch.check`). Written into a temporary directory and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lmforge import __version__
from lmforge.errors import UserError
from lmforge.export.hf_arch import HFArch, SpecialIds
from lmforge.export.hf_bart import Bart
from lmforge.export.hf_bert import Bert
from lmforge.export.hf_gpt2 import GPT2
from lmforge.export.hf_llama import Llama
from lmforge.export.hf_t5 import T5
from lmforge.export.hf_tokenizer import special_tokens, tokenizer_config
from lmforge.export.model_card import model_card
from lmforge.export.source import export_source
from lmforge.export.weights import to_theirs
from lmforge.fileio import atomic_directory, check_output, save_safetensors, write_atomic
from lmforge.plan.specs import ModelSpec

ARCHES: dict[str, HFArch] = {a.model_type: a for a in (GPT2(), Llama(), Bert(), T5(), Bart())}


def arch_for(spec: ModelSpec) -> HFArch:
    """The transformers architecture for ``spec``'s family and positions, checked to express it
    exactly (UserError naming the first field that it cannot)."""
    by_positions = {
        "decoder": {"learned": "gpt2", "rotary": "llama"},
        "encoder": {"learned": "bert"},
        "encoder-decoder": {"relative": "t5", "learned": "bart"},
    }[spec.family]
    if spec.positions not in by_positions:
        names = ", ".join(f"{p} ({ARCHES[m].hf_class})" for p, m in by_positions.items())
        raise UserError(f"no exact transformers equivalent for a {spec.family} with these positions",
                        f"positions={spec.positions}", f"transformers expresses {names}")
    arch = ARCHES[by_positions[spec.positions]]
    arch.check(spec)
    return arch


def special_ids(tokenizer) -> SpecialIds:
    return SpecialIds(tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.mask_id)


@dataclass
class HFExport:
    path: Path
    arch: str  # transformers class
    auto_class: str
    params: int
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "class": self.arch, "auto_class": self.auto_class, "params": self.params,
                "files": self.files, "notes": self.notes}


def _dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def export_hf(run_dir: str | Path, out: str | Path, *, force: bool = False) -> HFExport:
    """Write the run at ``run_dir`` as a transformers directory at ``out``."""
    out = Path(out)
    check_output(out, force=force, directory=True, source=Path(run_dir))
    source = export_source(run_dir)
    run, spec = source.run, source.run.spec
    arch = arch_for(spec)
    tokens = special_ids(run.tokenizer)
    config = arch.config(spec, tokens)
    config.update(dtype="float32", torch_dtype="float32", lmforge_version=__version__)
    tensors = to_theirs(arch.rules(spec), source.weights)
    tensors.update(arch.constants(spec))
    notes = [source.note] if source.note else []
    generation = arch.generation_config(spec, tokens)
    with atomic_directory(out) as tmp:
        write_atomic(tmp / "config.json", _dump(config))
        if generation is not None:
            write_atomic(tmp / "generation_config.json", _dump(generation))
        save_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        shutil.copyfile(run.run_dir / "tokenizer.json", tmp / "tokenizer.json")
        write_atomic(tmp / "tokenizer_config.json", _dump(tokenizer_config(run.tokenizer, spec.context)))
        write_atomic(tmp / "special_tokens_map.json", _dump(special_tokens(run.tokenizer)))
        write_atomic(tmp / "README.md", model_card(source, arch, notes))
        files = sorted(p.name for p in tmp.iterdir())
    n_params = sum(t.numel() for t in tensors.values())
    return HFExport(out, arch.hf_class, arch.auto_class, n_params, files, notes)
