"""Catalog of accelerators: memory, dense peak throughput, bandwidth, example price.

Peak TFLOP/s are dense (no 2:4 sparsity) tensor-core figures from each vendor's data
sheet; "bf16" is bf16/fp16 with fp32 accumulation, the precision of mixed-precision
training. Memory is the nominal capacity; bandwidth is HBM/GDDR bandwidth in GB/s.

Prices are EXAMPLES ONLY (rough on-demand cloud rates per GPU-hour, late 2025): they
vary by provider, region, commitment and month. Every verb that prints money says so
and takes ``--price`` to override.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lmforge.errors import UserError, check_positive, unknown_name


@dataclass(frozen=True)
class GPU:
    """One accelerator model."""

    name: str
    memory_bytes: int  # nominal device memory
    bf16_tflops: float  # dense bf16/fp16 tensor TFLOP/s (fp32 accumulate)
    fp8_tflops: float | None  # dense fp8 TFLOP/s; None if not supported
    int8_tops: float | None  # dense int8 TOP/s; None if not supported
    bandwidth_gbs: float  # memory bandwidth, GB/s (1e9 bytes/s)
    example_price_per_hour: float  # USD per GPU-hour, an EXAMPLE, overridable
    source: str  # data sheet the figures come from

    @property
    def bf16_flops(self) -> float:
        """Peak dense bf16 FLOP/s."""
        return self.bf16_tflops * 1e12

    @property
    def bandwidth_bytes(self) -> float:
        """Memory bandwidth in bytes/s."""
        return self.bandwidth_gbs * 1e9

    def peak_flops(self, precision: str = "bf16") -> float:
        """Peak dense FLOP/s at ``precision`` (bf16, fp16, fp8, int8)."""
        table = {"bf16": self.bf16_tflops, "fp16": self.bf16_tflops, "fp8": self.fp8_tflops, "int8": self.int8_tops}
        if precision not in table:
            raise UserError("unknown compute precision", precision, "choose one of " + ", ".join(table))
        value = table[precision]
        if value is None:
            raise UserError(f"{self.name} has no {precision} tensor cores", precision, "use bf16")
        return value * 1e12

    def to_dict(self) -> dict:
        return asdict(self)


GiB = 2**30

GPUS: dict[str, GPU] = {
    gpu.name: gpu
    for gpu in (
        # NVIDIA A100 Tensor Core GPU data sheet (2021): 312 TF bf16, 624 TOPS int8 dense.
        GPU("A100-40GB", 40 * GiB, 312.0, None, 624.0, 1555.0, 1.50, "NVIDIA A100 data sheet (SXM4 40GB)"),
        GPU("A100-80GB", 80 * GiB, 312.0, None, 624.0, 2039.0, 1.80, "NVIDIA A100 data sheet (SXM4 80GB)"),
        # NVIDIA H100 data sheet (2023): SXM 989 TF bf16, 1979 fp8/int8; PCIe 756 / 1513.
        GPU("H100-SXM", 80 * GiB, 989.0, 1979.0, 1979.0, 3350.0, 2.50, "NVIDIA H100 data sheet (SXM5)"),
        GPU("H100-PCIe", 80 * GiB, 756.0, 1513.0, 1513.0, 2000.0, 2.00, "NVIDIA H100 data sheet (PCIe)"),
        # NVIDIA H200 data sheet (2024): 141 GB HBM3e, 4.8 TB/s, H100 SXM compute.
        GPU("H200", 141 * 10**9, 989.0, 1979.0, 1979.0, 4800.0, 3.50, "NVIDIA H200 data sheet (SXM)"),
        # NVIDIA DGX B200 data sheet (2024): 1,440 GB for 8 GPUs; 72 PF fp8 training / 8.
        GPU("B200", 180 * 10**9, 2250.0, 4500.0, 4500.0, 8000.0, 5.00, "NVIDIA DGX B200 data sheet, per GPU"),
        # NVIDIA L4 data sheet (2023): 242 TF bf16 and 485 fp8 with sparsity -> half dense.
        GPU("L4", 24 * GiB, 121.0, 242.5, 242.5, 300.0, 0.80, "NVIDIA L4 data sheet (dense = sparse / 2)"),
        # AWS does not publish A10G peaks; NVIDIA A10 data sheet: 125 TF fp16, 250 TOPS int8
        # dense, 600 GB/s. A10G runs at lower clocks; measured dense peaks are nearer 70 TF.
        GPU("A10G", 24 * GiB, 70.0, None, 140.0, 600.0, 1.00, "NVIDIA A10 data sheet, A10G clocks (approx.)"),
        # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: fp16 tensor with fp32
        # accumulate 165.2 TF dense, fp8 (fp32 acc.) 330.3, int8 660.6 TOPS, 1008 GB/s.
        GPU("RTX-4090", 24 * GiB, 165.2, 330.3, 660.6, 1008.0, 0.40, "NVIDIA Ada whitepaper (GeForce RTX 4090)"),
        # AMD Instinct MI300X data sheet (2023): 1307.4 TF bf16 dense, 2614.9 fp8/int8.
        GPU("MI300X", 192 * GiB, 1307.4, 2614.9, 2614.9, 5300.0, 2.50, "AMD Instinct MI300X data sheet"),
    )
}

# Short names users type; each maps to one catalog entry.
ALIASES: dict[str, str] = {
    "a100": "A100-80GB",
    "a100-40": "A100-40GB",
    "a100-80": "A100-80GB",
    "h100": "H100-SXM",
    "h100-80gb": "H100-SXM",
    "h100-pcie": "H100-PCIe",
    "h200": "H200",
    "b200": "B200",
    "l4": "L4",
    "a10g": "A10G",
    "4090": "RTX-4090",
    "rtx4090": "RTX-4090",
    "mi300x": "MI300X",
}


# What ``torch.cuda.get_device_name()`` calls each card, lower-cased without spaces, dashes,
# underscores or "nvidia", first match wins; None: a card the catalog must not stand in for.
DEVICE_NAME_RULES: tuple[tuple[str, str | None], ...] = (
    (r"h100nvl", None),  # a different clock and memory from both H100 entries
    (r"h200", "H200"),  # also GH200: H100 SXM compute, H200 memory bandwidth
    (r"h100pcie", "H100-PCIe"),
    (r"h100", "H100-SXM"),  # "H100 80GB HBM3", "H100 SXM5 80GB"
    (r"a100.*80gb", "A100-80GB"),
    (r"a100", "A100-40GB"),
    (r"b200", "B200"),
    (r"^l4$", "L4"),  # not L40 / L40S
    (r"a10g", "A10G"),
    (r"rtx4090|geforce4090", "RTX-4090"),
    (r"mi300x", "MI300X"),
)


def gpu_for_device_name(device_name: str) -> GPU | None:
    """The catalog entry for a CUDA device name (``torch.cuda.get_device_name()``), or None
    for a card the catalog does not hold (``DEVICE_NAME_RULES``)."""
    key = re.sub(r"[\s\-_]+", "", device_name.lower()).replace("nvidia", "")
    for pattern, catalog in DEVICE_NAME_RULES:
        if re.search(pattern, key):
            return None if catalog is None else GPUS[catalog]
    return None


def get_gpu(name: str) -> GPU:
    """Look up a GPU by catalog name or alias, case-insensitively.

    Raises UserError with the closest names for an unknown GPU.
    """
    key = name.strip().lower()
    for gpu_name, gpu in GPUS.items():
        if gpu_name.lower() == key:
            return gpu
    if key in ALIASES:
        return GPUS[ALIASES[key]]
    raise unknown_name("GPU", name, list(GPUS))


@dataclass(frozen=True)
class Cluster:
    """``count`` identical GPUs, e.g. parsed from '64xH100'."""

    gpu: GPU
    count: int

    @property
    def peak_flops(self) -> float:
        return self.count * self.gpu.bf16_flops

    def to_dict(self) -> dict:
        return {"gpu": self.gpu.name, "count": self.count}


def parse_cluster(text: str) -> Cluster:
    """'64xH100' -> Cluster(H100-SXM, 64); 'H100' -> one GPU; '8 x A100-80GB' works too."""
    match = re.fullmatch(r"\s*(?:(\S+?)\s*[xX*]\s*)?([A-Za-z][\w.-]*)\s*", str(text))
    if not match:
        raise UserError("cannot read the GPUs", text, "write them like 64xH100 or 8xA100-80GB")
    count_text, gpu_name = match.groups()
    if count_text is None:
        count = 1
    else:
        try:
            count = int(count_text)
        except ValueError:
            raise UserError("the GPU count must be a whole number", count_text, "write the GPUs like 64xH100") from None
        check_positive("GPU count", count, upper=10**7)
    return Cluster(get_gpu(gpu_name), count)
