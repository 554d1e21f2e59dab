"""The converter: a model at fp32 -> bf16 / fp16 / int8 / int4, in place, and back.

Which tensors are quantized is what ``lmforge.plan.storage.weight_bytes`` counts (and
``tests/quantize/test_sizes.py`` checks, byte for byte): every ``nn.Linear`` weight
(attention, cross-attention, MLP, MLM transform, pooler) and the token embedding and an
untied output head unless ``keep_embeddings`` holds these at 16 bits. Everything else
(norms, biases, position and token-type tables, T5 relative-position tables, the MLM
output bias) is kept at 16 bits, in the model's compute dtype (bf16 for int8/int4: the
dtype of PyTorch's fused weight-only CPU kernels; see `lmforge.quantize.modules`).

A GPT-2 style output head tied to the token embedding stays tied: quantized, the two
share one set of codes and scales, stored once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lmforge.errors import UserError, check_choice
from lmforge.quantize.modules import Int4Linear, Int8Linear, QuantizedEmbedding
from lmforge.quantize.primitives import (
    SCALE_METHODS,
    check_group_size,
    int4_quantize,
    int8_quantize,
)

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
GROUP_SIZES = (32, 64, 128)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZED_MODULES = (Int8Linear, Int4Linear, QuantizedEmbedding)


@dataclass(frozen=True)
class Scheme:
    """How a model is quantized; written to a quantized run's ``quantization.json``.

    ``group_size`` is for int4 (None otherwise); ``scale_method`` absmax or mse (int8/int4);
    ``keep_embeddings``: the token embedding and output head stay 16-bit (int8/int4).
    """

    precision: str
    group_size: int | None = None
    scale_method: str = "absmax"
    keep_embeddings: bool = True

    @property
    def quantized(self) -> bool:
        return self.precision in ("int8", "int4")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of every tensor that is not quantized, and of the activations."""
        return DTYPES.get(self.precision, torch.bfloat16)

    @property
    def label(self) -> str:
        """``int4-g32``, ``int8``, ``bf16``."""
        return f"int4-g{self.group_size}" if self.precision == "int4" else self.precision

    def to_dict(self) -> dict:
        return asdict(self)


def make_scheme(precision: str, group_size: int | None = None, scale_method: str = "absmax",
                keep_embeddings: bool = True) -> Scheme:
    """A checked `Scheme` (UserError for an unknown precision, group size or scale method)."""
    check_choice("precision", precision, PRECISIONS)
    check_choice("scale method", scale_method, SCALE_METHODS)
    if precision == "int4":
        group_size = 32 if group_size is None else group_size
        if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
            raise UserError("unsupported group size", group_size,
                            "choose one of " + ", ".join(map(str, GROUP_SIZES)))
    else:
        group_size = None
    if precision not in ("int8", "int4"):
        scale_method, keep_embeddings = "absmax", True
    return Scheme(precision, group_size, scale_method, bool(keep_embeddings))


# ---- which modules --------------------------------------------------------------------


def output_head(model: nn.Module) -> tuple[nn.Module, str] | None:
    """(parent, attribute) of the vocabulary projection: ``lm_head`` or the MLM head's ``out``."""
    if isinstance(getattr(model, "lm_head", None), nn.Linear | Int8Linear | Int4Linear):
        return model, "lm_head"
    head = getattr(model, "head", None)
    if head is not None and isinstance(getattr(head, "out", None), nn.Linear | Int8Linear | Int4Linear):
        return head, "out"
    return None


def _is_tied(model: nn.Module) -> bool:
    spot = output_head(model)
    if spot is None:
        return False
    head = getattr(*spot)
    tok = model.tok_emb
    if isinstance(head, nn.Linear) and isinstance(tok, nn.Embedding):
        return head.weight is tok.weight
    return getattr(head, "weight_q", None) is getattr(tok, "weight_q", 0)


def _linears(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, module) of every nn.Linear, each once."""
    found, seen = [], set()
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Linear) and id(child) not in seen:
                seen.add(id(child))
                found.append((f"{parent_name}.{attr}" if parent_name else attr, parent, attr, child))
    return found


# ---- converting -------------------------------------------------------------------------

# make(name, weight (out, in) fp32 or meta, bias or None) -> Int8Linear | Int4Linear
Maker = Callable[[str, torch.Tensor, torch.Tensor | None], nn.Module]


def quantize_model(model: nn.Module, scheme: Scheme, importance: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Convert ``model`` in place to ``scheme`` from its float weights; returns it (eval mode).

    ``importance``: {linear name: (in,) mean squared input} from calibration text, for the
    MSE scale search (`lmforge.quantize.calibrate`). UserError when a group size does not
    divide a layer's input features.
    """
    importance = importance or {}

    def make(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        kept_bias = bias.detach().to(scheme.dtype) if bias is not None else None
        if scheme.precision == "int8":
            return Int8Linear.from_codes(*int8_quantize(weight, scheme.scale_method, importance.get(name)), kept_bias)
        check_group_size(scheme.group_size, weight.shape[1], name)
        codes, scale, zero = int4_quantize(weight, scheme.group_size, scheme.scale_method, importance.get(name))
        return Int4Linear.from_codes(codes, scale, zero, kept_bias)

    return _convert(model, scheme, make)


def quantized_skeleton(model: nn.Module, scheme: Scheme) -> nn.Module:
    """Swap in empty quantized modules of the right shapes (to load a quantized file into);
    ``model`` is best built on the meta device."""

    def make(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        out, n_in = weight.shape
        bias_flag = bias is not None
        if scheme.precision == "int8":
            return Int8Linear(n_in, out, bias_flag, bias_dtype=scheme.dtype, device="meta")
        check_group_size(scheme.group_size, n_in, name)
        return Int4Linear(n_in, out, scheme.group_size, bias_flag, bias_dtype=scheme.dtype, device="meta")

    return _convert(model, scheme, make)


def _convert(model: nn.Module, scheme: Scheme, make: Maker) -> nn.Module:
    if any(isinstance(m, QUANTIZED_MODULES) for m in model.modules()):
        raise UserError("the model is quantized already", type(model).__name__, "dequantize_model(model) first")
    if not scheme.quantized:
        return model.to(scheme.dtype).eval()
    spot = output_head(model)
    head = getattr(*spot) if spot is not None else None
    tied = _is_tied(model)
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for name, parent, attr, linear in _linears(model):
        if linear is head and (scheme.keep_embeddings or tied):
            continue  # kept 16-bit, or quantized below together with the embedding it is tied to
        swaps.append((parent, attr, make(name, linear.weight, linear.bias)))
    if not scheme.keep_embeddings:
        head_name = _name_of(model, head) if tied else None
        table = make(head_name or "tok_emb", model.tok_emb.weight, None)
        swaps.append((model, "tok_emb", QuantizedEmbedding(table, dtype=scheme.dtype)))
        if tied:
            swaps.append((spot[0], spot[1], _share(table, head.bias, scheme)))
    for parent, attr, module in swaps:
        setattr(parent, attr, module)
    cast_kept(model, scheme.dtype)
    return model.eval()


def _share(table: Int8Linear | Int4Linear, bias: torch.Tensor | None, scheme: Scheme) -> nn.Module:
    """An output head over the very buffers of a quantized embedding table (tied weights)."""
    kept_bias = bias.detach().to(scheme.dtype) if bias is not None and bias.device.type != "meta" else None
    if isinstance(table, Int8Linear):
        head = Int8Linear(table.in_features, table.out_features, bias is not None, bias_dtype=scheme.dtype,
                          device="meta")
    else:
        head = Int4Linear(table.in_features, table.out_features, table.group_size, bias is not None,
                          bias_dtype=scheme.dtype, device="meta")
        head.weight_zero = table.weight_zero
        head.tied_to_embedding = True  # stays in the plain layout: the embedding reads its rows
    head.weight_q, head.weight_scale = table.weight_q, table.weight_scale
    if kept_bias is not None:
        head.bias = kept_bias
    return head


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def cast_kept(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating parameters and buffers of every module but the quantized ones."""
    for module in model.modules():
        if isinstance(module, QUANTIZED_MODULES):
            if getattr(module, "bias", None) is not None and module.bias.dtype != dtype:
                module.bias = module.bias.to(dtype)
            continue
        for p in list(module.parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)  # in place on the Parameter: tied parameters stay one object
        for name, b in list(module.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and b.dtype != dtype:
                setattr(module, name, b.to(dtype))


def dequantize_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every quantized module by a float one holding its dequantized weight and cast
    the rest to ``dtype`` (to re-quantize a quantized run: ``lmforge quantize --force``)."""
    for parent in list(model.modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, QuantizedEmbedding):
                embedding = nn.Embedding(child.num_embeddings, child.embedding_dim, dtype=dtype)
                embedding.weight.data = child.weight.to(dtype)
                setattr(parent, attr, embedding)
            elif isinstance(child, Int8Linear | Int4Linear):
                if getattr(child, "layout", "plain") != "plain":
                    raise RuntimeError("load the model in the plain layout to dequantize it")
                linear = nn.Linear(child.in_features, child.out_features, child.bias is not None, dtype=dtype)
                linear.weight.data = child.dequantized_weight(dtype)
                if child.bias is not None:
                    linear.bias.data = child.bias.to(dtype)
                setattr(parent, attr, linear)
    spec = getattr(model, "spec", None)
    if spec is not None and spec.tied_embeddings and hasattr(model, "tie_weights"):
        model.tie_weights()  # the head's dequantized copy of the shared table becomes the embedding again
    return model.to(dtype)


# ---- bytes ------------------------------------------------------------------------------


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model``, each storage once (tied tensors once).

    Tensor subclasses that wrap others (torchao's quantized weights) count their inner tensors.
    """
    seen: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):
            names, _ = t.__tensor_flatten__()
            for name in names:
                add(getattr(t, name))
            return
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()

    for t in [*model.parameters(), *(b for b in model.buffers() if b is not None)]:
        add(t)
    return sum(seen.values())
