"""The process group of a job launched by ``torchrun`` (or a single process without it).

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT and
TORCHELASTIC_RESTART_COUNT for every worker (PyTorch docs, "torchrun (Elastic
Launch)", Environment Variables). The backend is ``nccl`` on GPUs and ``gloo`` on CPUs
(PyTorch docs, "Distributed communication package", Backends: "Use NCCL for GPU
training, Gloo for CPU training"). Every collective waits at most ``timeout`` seconds,
so a job whose peer died stops instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmforge.errors import UserError

LAUNCH_HINT = "torchrun --nproc_per_node N -m lmforge train ..."


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device
    backend: str | None  # None: no process group (a single process)
    restart: int  # torchrun's restart count: 0 on the first attempt

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def main(self) -> bool:
        """Rank 0: the only one that prints, logs and plots."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name} is not an integer", value, "launch with torchrun") from None


def _device(name: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU (cuda:LOCAL_RANK) if there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("no CUDA device here", name, "use --train.device cpu (or auto)")
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise UserError(
                    "more processes on this machine than GPUs",
                    f"LOCAL_RANK={local_rank}, {torch.cuda.device_count()} GPUs",
                    "set --nproc_per_node to the number of GPUs",
                )
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup(strategy: str, backend: str, device_name: str, timeout: float) -> DistEnv:
    """Join the job's process group (under torchrun) or describe the single process.

    ``strategy`` is the configured one; ``single`` refuses a world larger than one, and
    the others need torchrun (``--nproc_per_node 1`` is fine for a world of one).
    """
    if not launched_by_torchrun():
        if strategy not in ("auto", "single"):
            raise UserError(f"strategy {strategy} needs several processes", strategy,
                            f"launch with {LAUNCH_HINT} --parallel.strategy {strategy}")
        return DistEnv(0, 1, 0, 1, _device(device_name, 0), None, 0)
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_world = _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", world)
    if strategy == "single" and world > 1:
        raise UserError("strategy single runs one process", f"WORLD_SIZE={world}",
                        "use --parallel.strategy ddp (or zero1, zero2, zero3) under torchrun")
    device = _device(device_name, local_rank)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UserError("the nccl backend needs GPUs", f"train.device={device_name}", "use --parallel.backend gloo")
    restart = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        wait = datetime.timedelta(seconds=timeout)
        dist.init_process_group(backend, store=_store(rank, world, restart, wait), rank=rank, world_size=world,
                                timeout=wait, **kwargs)
    return DistEnv(rank, world, local_rank, local_world, device, backend, restart)


def _store(rank: int, world: int, restart: int, timeout: datetime.timedelta) -> dist.Store:
    """The job's key-value store (torchrun's, at MASTER_ADDR:MASTER_PORT), under a prefix
    of its own for each restart: the process group's keys (gloo publishes each rank's
    address there) are otherwise the same in every attempt, and a restarted rank could
    read a dead peer's address from the attempt before ("Connection refused")."""
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), _env_int("MASTER_PORT", 29500)
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(host, port, world, is_master=rank == 0 and not agent_hosts_it, timeout=timeout)
    return dist.PrefixStore(f"lmforge/attempt-{restart}", store)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (all ranks stop at the same step)."""
    if not env.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(env: DistEnv, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over ranks (the loss each rank saw)."""
    if not env.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world


def gather(env: DistEnv, obj: object) -> list:
    """Every rank's ``obj`` (picklable, made by lmforge itself), in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    out: list = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(env: DistEnv, obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(env: DistEnv, values: torch.Tensor) -> list[float]:
    """Element-wise sums of a small CPU tensor over ranks, as floats."""
    if env.distributed:
        values = values.to(env.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return [float(v) for v in values.cpu()]
