"""The export and import verbs: runs to transformers directories and GGUF files, and
transformers checkpoints to runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lmforge.cli.output import print_json, print_lines, print_table


def _facts(title: str, rows: list[list[str]]) -> None:
    print_table(title, ["", ""], rows, right_align_from=2, header=False)


def export(
    run_dir: str,
    /,
    *,
    to: Literal["hf", "gguf"],
    out: str | None = None,
    quant: Literal["f32", "f16", "bf16", "q8_0", "q4_0"] | None = None,
    force: bool = False,
    json: bool = False,
) -> None:
    """Export a run where its users are: a Hugging Face transformers directory (every family)
    or a GGUF file for llama.cpp and Ollama (decoders).

    --to hf writes config.json, model.safetensors, generation_config.json, tokenizer.json,
    tokenizer_config.json and a README model card, loaded by AutoModelFor...from_pretrained
    and AutoTokenizer.from_pretrained: GPT-2 style -> GPT2LMHeadModel, Llama style ->
    LlamaForCausalLM, BERT -> BertForMaskedLM, T5 -> T5ForConditionalGeneration, BART ->
    BartForConditionalGeneration. --to gguf writes one file (architecture llama or gpt2, the
    byte-level BPE tokenizer) at the --quant type. A layout the target cannot express exactly
    is refused, naming the field. A quantized run exports its dequantized float weights to hf,
    and to gguf at the requested type.

    Args:
        run_dir: a run directory (trained, quantized or imported)
        to: hf (a transformers directory) or gguf (a llama.cpp file)
        out: where to write (default: RUN_DIR-hf, or RUN_DIR-QUANT.gguf beside the run)
        quant: gguf only: the weight type of the matrices, f32, f16 (default), bf16, q8_0 or q4_0
        force: replace --out if it exists
        json: print JSON instead of a table

    Examples:
        lmforge export runs/quickstart --to hf --out exported/quickstart
        lmforge export runs/quickstart --to gguf --quant q8_0 --out quickstart-q8_0.gguf
    """
    from lmforge.errors import UserError

    source = Path(run_dir)
    if to == "hf":
        if quant is not None:
            raise UserError("--quant is for --to gguf", f"--quant {quant}",
                            "drop --quant (a transformers directory holds float weights)")
        from lmforge.export.hf import export_hf

        result = export_hf(source, Path(out) if out else source.with_name(f"{source.name}-hf"), force=force)
        if json:
            print_json(result.to_dict())
            return
        _facts(f"exported {source} for transformers",
               [["directory", str(result.path)], ["class", result.arch], ["parameters", f"{result.params:,}"],
                ["files", ", ".join(result.files)]])
        print_lines(*[f"note: {n}" for n in result.notes],
                    f"load it: {result.auto_class}.from_pretrained({str(result.path)!r})")
        return
    from lmforge.export.gguf import export_gguf

    quant = quant or "f16"
    result = export_gguf(source, Path(out) if out else source.with_name(f"{source.name}-{quant}.gguf"),
                         quant=quant, force=force)
    if json:
        print_json({"path": str(result.path), "arch": result.arch, "quant": result.quant,
                    "tensors": result.n_tensors, "bytes": result.bytes, "notes": result.notes})
        return
    _facts(f"exported {source} for llama.cpp",
           [["file", str(result.path)], ["architecture", result.arch], ["weights", result.quant],
            ["tensors", str(result.n_tensors)], ["size", f"{result.bytes / 2**20:,.1f} MiB"]])
    print_lines(*[f"note: {n}" for n in result.notes], f"run it: llama-cli -m {result.path} -p 'Once upon a time'")


def import_checkpoint(
    source: str,
    /,
    *,
    out: str | None = None,
    force: bool = False,
    json: bool = False,
) -> None:
    """Import a transformers checkpoint (GPT2LMHeadModel, LlamaForCausalLM, BertForMaskedLM,
    T5ForConditionalGeneration, BartForConditionalGeneration, with its tokenizer.json) as an
    lmforge run directory that eval, generate, quantize, export and train --init-from take.

    The source is a local directory written by save_pretrained, or a Hub name (org/model,
    fetched where there is a network). Only safetensors weights are read; a config.json
    setting lmforge cannot compute exactly is refused, naming it.

    Args:
        source: a transformers checkpoint directory, or a Hugging Face Hub name
        out: the run directory to write (default: runs/NAME)
        force: replace --out if it exists
        json: print JSON instead of a table

    Examples:
        lmforge import ./my-gpt2 --out runs/my-gpt2
        lmforge train --init-from runs/my-gpt2 --data finance=fomc.txt --train.max-tokens 2e6
    """
    from lmforge.export.importer import import_hf

    target = Path(out) if out else Path("runs") / Path(source.rstrip("/")).name
    result = import_hf(source, target, force=force)
    if json:
        print_json(result.to_dict())
        return
    _facts(f"imported {source}", [["run directory", str(result.run_dir)], ["class", result.hf_class],
                 ["parameters", f"{result.params:,}"]])
    print_lines(*[f"note: {n}" for n in result.notes],
                f"use it: lmforge generate {result.run_dir} --prompt '...' / lmforge eval {result.run_dir} --data FILE")
