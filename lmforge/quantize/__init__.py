"""Quantization: weight-only int8 / int4 (and bf16 / fp16) for trained runs, and QAT.

Three layers (DESIGN.md): tensor primitives (`primitives`: quantize, dequantize, pack,
fake-quantize), drop-in modules (`modules`: Int8Linear, Int4Linear, QuantizedEmbedding),
and the converter (`convert`: swap modules; `write` / `load`: quantized run directories).
`quality` and `report` measure a quantization (``lmforge quantize``); `qat` is the
quantization-aware-training hook of ``lmforge train --qat``.
"""
