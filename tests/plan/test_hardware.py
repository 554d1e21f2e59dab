"""GPU catalog lookups and cluster strings like 64xH100."""

from __future__ import annotations

import pytest

from lmforge.errors import UserError
from lmforge.plan.hardware import GPUS, get_gpu, gpu_for_device_name, parse_cluster

REQUIRED = ["A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "L4", "A10G", "RTX-4090", "MI300X"]


def test_catalog_has_the_required_gpus():
    assert set(REQUIRED) <= set(GPUS)


def test_h100_sxm_data_sheet():
    """NVIDIA H100 data sheet (SXM5): 989 TF dense bf16, 1979 TF fp8, 3.35 TB/s, 80 GB."""
    gpu = get_gpu("h100")
    assert gpu.name == "H100-SXM"
    assert gpu.bf16_flops == 989e12 and gpu.peak_flops("fp8") == 1979e12
    assert gpu.bandwidth_bytes == 3.35e12 and gpu.memory_bytes == 80 * 2**30


@pytest.mark.parametrize("text, name, count", [("64xH100", "H100-SXM", 64), ("8 x a100-80gb", "A100-80GB", 8),
                                               ("L4", "L4", 1), ("2*MI300X", "MI300X", 2)])
def test_parse_cluster(text, name, count):
    cluster = parse_cluster(text)
    assert (cluster.gpu.name, cluster.count) == (name, count)


@pytest.mark.parametrize("text, needle", [
    ("8xFOO", "unknown GPU ('FOO')"),
    ("0xH100", "GPU count must be greater than zero"),
    ("axH100", "GPU count must be a whole number"),
    ("8x", "cannot read the GPUs"),
])
def test_bad_clusters(text, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_cluster(text)


def test_unknown_gpu_suggests_closest():
    with pytest.raises(UserError, match="did you mean H100-SXM"):
        get_gpu("H100-SMX")


def test_no_fp8_on_a100():
    with pytest.raises(UserError, match="no fp8"):
        get_gpu("A100-80GB").peak_flops("fp8")


@pytest.mark.parametrize(("device_name", "catalog"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100-PCIE-40GB", "A100-40GB"), ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", None), ("NVIDIA H100 NVL", None), ("Tesla T4", None),
])
def test_cuda_device_names_find_their_catalog_entry(device_name, catalog):
    """What train's MFU and `lmforge env` divide by: an L40S is not an L4 (121 TF), an H100 NVL
    not an H100 SXM (989 TF), an A100-SXM4-80GB is the 80 GB A100."""
    gpu = gpu_for_device_name(device_name)
    assert (gpu.name if gpu else None) == catalog
