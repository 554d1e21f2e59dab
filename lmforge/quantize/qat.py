"""Quantization-aware training: fake-quantized linears with the parameter names of nn.Linear.

``lmforge train --init-from RUN --qat int4 --qat.group_size 32`` fine-tunes a trained
model while every linear layer that ``lmforge quantize`` would quantize computes with its
quantize -> dequantize weight W_hat in the forward pass; the gradient passes straight
through to the float weight W (Bengio et al. 2013; Jacob et al. 2018, Sec. 3; for LLMs,
Liu et al. 2023, "LLM-QAT"). The model learns weights whose rounding hurts less.

The swapped modules keep their parameters (the same ``weight`` / ``bias`` Parameter
objects, so a tied embedding and head stay tied) and therefore their names: checkpoints
and the final model.safetensors hold plain float weights that load into a plain model.
Fake quantization uses the absmax scales of ``lmforge quantize --scale absmax`` (its
default), so quantizing the result afterwards gives exactly the weights training saw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import UserError
from lmforge.quantize.convert import make_scheme, output_head
from lmforge.quantize.primitives import check_group_size, fake_quantize


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses the fake-quantized weight (straight-through gradient)."""

    precision: str = "int4"
    group_size: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return F.linear(x, fake_quantize(self.weight, self.precision, self.group_size), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fake_quant={self.precision}, group_size={self.group_size}"


class FakeQuantEmbedding(nn.Embedding):
    """nn.Embedding whose lookup reads the fake-quantized table (straight-through gradient)."""

    precision: str = "int4"
    group_size: int = 32

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., dim)
        table = fake_quantize(self.weight, self.precision, self.group_size)  # (V, d)
        return F.embedding(idx, table, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                           self.sparse)


def apply_qat(model: nn.Module, precision: str, group_size: int = 32, keep_embeddings: bool = True) -> nn.Module:
    """Swap fake-quantized modules into ``model`` in place (same Parameters, same names); returns it."""
    scheme = make_scheme(precision, group_size if precision == "int4" else None, "absmax", keep_embeddings)
    if not scheme.quantized:
        raise UserError("quantization-aware training needs int8 or int4", precision, "pass --qat int8 or --qat int4")
    spot = output_head(model)
    head = getattr(*spot) if spot is not None else None
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    seen: set[int] = set()
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if type(child) is not nn.Linear or id(child) in seen or (child is head and scheme.keep_embeddings):
                continue
            seen.add(id(child))
            if scheme.precision == "int4":
                check_group_size(scheme.group_size, child.in_features, f"{parent_name}.{attr}".lstrip("."))
            swaps.append((parent, attr, _fake_linear(child, scheme.precision, scheme.group_size or 0)))
    if not scheme.keep_embeddings and type(getattr(model, "tok_emb", None)) is nn.Embedding:
        swaps.append((model, "tok_emb", _fake_embedding(model.tok_emb, scheme.precision, scheme.group_size or 0)))
    for parent, attr, module in swaps:
        setattr(parent, attr, module)
    return model


def qat_hook(qat_config) -> Callable[[nn.Module], None]:
    """The ``model_hook`` for ``lmforge.train.loop.train`` from a ``QATConfig``."""
    make_scheme(qat_config.precision, qat_config.group_size if qat_config.precision == "int4" else None)

    def hook(model: nn.Module) -> None:
        apply_qat(model, qat_config.precision, qat_config.group_size, qat_config.keep_embeddings)

    return hook


def _fake_linear(linear: nn.Linear, precision: str, group_size: int) -> FakeQuantLinear:
    module = FakeQuantLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    module.weight, module.bias = linear.weight, linear.bias  # the same Parameters (names, ties, optimizer)
    module.precision, module.group_size = precision, group_size
    return module


def _fake_embedding(embedding: nn.Embedding, precision: str, group_size: int) -> FakeQuantEmbedding:
    module = FakeQuantEmbedding(embedding.num_embeddings, embedding.embedding_dim, device="meta")
    module.weight = embedding.weight
    module.padding_idx, module.max_norm = embedding.padding_idx, embedding.max_norm
    module.precision, module.group_size = precision, group_size
    return module
