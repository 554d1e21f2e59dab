"""``lmforge export RUN_DIR --to gguf``: one GGUF file that llama.cpp loads and runs.

The file holds the architecture's hyperparameters (``{arch}.*`` keys), the tokenizer
(`lmforge.export.gguf_vocab`: llama.cpp's ``gpt2`` byte-level BPE with the ``gpt-2``
pre-tokenizer), provenance (``general.*`` and ``lmforge.*`` keys) and every weight under
llama.cpp's names (`lmforge.export.gguf_arch`: ``llama`` or ``gpt2``, chosen from the spec;
any spec neither expresses exactly is refused).

Quantization uses gguf-py's own quantizers (``gguf.quants.quantize``, the reference Python
versions of ggml's): with ``quant`` one of `GGUF_QUANTS` the 2-D weight matrices are stored
as that type; 1-D tensors (norm scales and shifts, biases) stay f32, as llama.cpp's
converter keeps them. q8_0 and q4_0 quantize blocks of 32 along each row (ggml's
``QK8_0 = QK4_0 = 32``); a matrix whose rows are not a multiple of 32 long is stored as f16
instead, and the result's notes name it. A quantized lmforge run is exported from its
dequantized float weights (`lmforge.export.source`).

The output is checked before any work (`lmforge.fileio.check_output`) and written to a
temporary file beside it, renamed into place only when complete (`lmforge.fileio.atomic_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import UserError, check_choice
from lmforge.export.gguf_arch import add_hparams, check_spec, gguf_tensors
from lmforge.export.gguf_vocab import add_vocab, gguf_vocab
from lmforge.fileio import atomic_file, check_output

GGUF_QUANTS: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0")
F16_MAX = 65504.0  # largest finite IEEE half


@dataclass
class GGUFResult:
    path: Path
    arch: str  # llama.cpp architecture: llama | gpt2
    quant: str  # one of GGUF_QUANTS (the 2-D matrices' type)
    n_tensors: int
    bytes: int  # of the file
    notes: list[str] = field(default_factory=list)
    tensor_types: dict[str, str] = field(default_factory=dict)  # GGUF name -> ggml type name (F32, Q8_0, ...)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "arch": self.arch, "quant": self.quant, "n_tensors": self.n_tensors,
                "bytes": self.bytes, "notes": list(self.notes), "tensor_types": dict(self.tensor_types)}


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise UserError("GGUF export needs the gguf package", "gguf", "pip install 'lmforge[gguf]'") from None
    return gguf


def _writer_class(gguf):
    """gguf-py's GGUFWriter, able to write an empty typed array (an empty merges list, which
    llama.cpp requires for a byte-only vocabulary and gguf-py's own packer refuses)."""

    class Writer(gguf.GGUFWriter):
        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer


def _qtypes(gguf) -> dict:
    Q = gguf.GGMLQuantizationType
    F = gguf.LlamaFileType
    return {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "bf16": (Q.BF16, F.MOSTLY_BF16),
            "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0), "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0)}


def tensor_type(gguf, shape: tuple[int, ...], quant: str):
    """The ggml type of a tensor of numpy ``shape`` under ``quant``: 1-D f32; a matrix the
    quant's type when its rows (the last axis, llama.cpp's ne[0]) split into whole blocks, else f16."""
    Q = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return Q.F32
    qtype = _qtypes(gguf)[quant][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else Q.F16


def export_gguf(run_dir, out, *, quant: str = "f16", force: bool = False) -> GGUFResult:
    """Write the run at ``run_dir`` as a GGUF file ``out`` for llama.cpp (module docstring).

    ``quant``: the type of the 2-D weight matrices, one of `GGUF_QUANTS`. Raises UserError for
    an unknown quant, an existing ``out`` without ``force``, a missing gguf package, an encoder
    or encoder-decoder run, or a spec or tokenizer llama.cpp cannot express exactly.
    """
    import lmforge
    from lmforge.export.source import export_source

    check_choice("GGUF quant", quant, GGUF_QUANTS)
    out, run_dir = Path(out), Path(run_dir)
    check_output(out, force=force, directory=False, source=run_dir)
    gguf = _import_gguf()
    source = export_source(run_dir)
    spec, tokenizer = source.run.spec, source.run.tokenizer
    arch = check_spec(spec)
    vocab = gguf_vocab(tokenizer, spec.vocab_size)
    tensors, notes = gguf_tensors(spec, source.weights, arch)
    if source.note:
        notes.insert(0, source.note)
    if vocab.unused:
        notes.append(f"{vocab.unused} ids the tokenizer does not use are written as unused [PAD<id>] tokens")

    Q = gguf.GGMLQuantizationType
    typed, fallback = [], []
    for t in tensors:
        qtype = tensor_type(gguf, t.data.shape, quant)
        if t.data.ndim >= 2 and qtype != _qtypes(gguf)[quant][0]:
            fallback.append(t.name)
        if qtype == Q.F16 and t.data.size and float(abs(t.data).max()) > F16_MAX:
            raise UserError("a weight does not fit in float16", t.name, "export with --quant bf16 or f32")
        typed.append((t, qtype))
    if fallback:
        block = gguf.GGML_QUANT_SIZES[_qtypes(gguf)[quant][0]][0]
        notes.append(f"{len(fallback)} matrices have rows not a multiple of {quant}'s block of {block} and are "
                     f"stored as f16: {', '.join(fallback)}")

    run_name = getattr(source.run.config, "name", None) or run_dir.name
    with atomic_file(out) as tmp:
        writer = _writer_class(gguf)(tmp, arch)
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(run_name)
            writer.add_description(f"lmforge {lmforge.__version__} export of run {run_name!r} "
                                   f"(preset {spec.name}, {quant})")
            writer.add_file_type(int(_qtypes(gguf)[quant][1]))
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_string("lmforge.version", lmforge.__version__)  # gguf-py has no key for the exporter
            writer.add_string("lmforge.run", run_name)
            writer.add_string("lmforge.spec", json.dumps(spec.to_dict(), sort_keys=True))
            if source.dequantized:
                writer.add_string("lmforge.dequantized_from", source.dequantized)
            add_hparams(writer, spec, arch)
            add_vocab(writer, vocab)
            for t, qtype in typed:
                data = gguf.quants.quantize(t.data, qtype)
                writer.add_tensor(t.name, data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return GGUFResult(out, arch, quant, len(typed), out.stat().st_size, notes,
                      {t.name: qtype.name for t, qtype in typed})
