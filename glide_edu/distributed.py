"""Data parallelism on PyTorch's own engine (``torch.distributed``): what the trainer needs, nothing hand-made.

Launch ``glide-edu train`` (:mod:`glide_edu.train_run`) with ``torchrun`` and the trainer becomes one rank of
a ``DistributedDataParallel`` job — NCCL on GPUs, gloo on CPUs::

    torchrun --nproc_per_node 2 -m glide_edu.cli train CONFIG --out F      # one machine, 2 processes
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m glide_edu.cli train CONFIG --out F  # 2 machines

How the batch is split (so that N processes compute what one process computes): every rank draws the same
*global* batch of ``batch_size`` examples, timesteps and noise from the same seeded generator, and keeps its
own contiguous slice of ``batch_size / world_size`` (:func:`shard`). DDP averages the gradients of the slices,
which is the gradient of the global batch's mean loss; the loss-aware timestep sampler gathers the losses of
all ranks in rank order (:meth:`glide_edu.resample.LossSecondMomentResampler.update_with_local_losses`), so its
state is the one-process state. Module
randomness (dropout) is seeded per rank. Rank 0 alone writes checkpoints, snapshots and logs.

``parallel = "fsdp"`` shards the weights, gradients and Adam moments (and the EMA copy) over the ranks instead
of replicating them (PyTorch's ``fully_shard``, one unit per UNet / transformer block, :func:`shard_model`):
for models that do not fit one GPU. Checkpoints are gathered to full tensors on rank 0 and written in the
one-process format, so a run can move between 1 process, DDP and FSDP.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether this process is one rank of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 (or no process group): the one that writes files and logs."""
    return rank_and_world()[0] == 0


def init_from_env(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``, …).

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1, or a group already exists. ``backend``
    defaults to NCCL when CUDA is available, gloo otherwise; a CUDA rank is pinned to ``LOCAL_RANK``'s GPU.
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} is not; launch with torchrun "
                           "(e.g. torchrun --nproc_per_node 2 …), which sets them")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return True


def check_divisible(batch_size: int, world_size: int) -> None:
    """One clear error when the global batch cannot be split evenly over the ranks."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} does not split over {world_size} processes; use a multiple of "
                         f"{world_size} (the batch size is the global one, summed over processes)")


def shard(x: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous slice of the global batch ``x`` (B, …) → (B / world_size, …)."""
    n = x.shape[0] // world_size
    return x[rank * n:(rank + 1) * n]


def all_gather_cat(x: Tensor) -> Tensor:
    """The slices of all ranks, concatenated in rank order along dim 0 (equal shapes on every rank)."""
    if not is_distributed():
        return x
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    y = x.contiguous().to(device)  # NCCL gathers GPU tensors only (an RNG state lives on the CPU)
    parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, y)
    return torch.cat(parts).to(x.device)


def mean_across(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks (a scalar loss for logging and for the same divergence check everywhere)."""
    if not is_distributed():
        return x
    y = x.detach().clone().float()
    dist.all_reduce(y)
    return y / dist.get_world_size()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        dist.barrier()


BLOCK_LISTS = ("input_blocks", "output_blocks", "resblocks")  # the ModuleLists whose entries become FSDP units


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP (``fully_shard``) over this process group: each block of the UNet's input/output lists, its
    middle block and each text-transformer block is one unit (gathered for its forward, freed after), then
    the rest. Mutates and returns ``model``; its parameters become DTensors sharded on dim 0."""
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        for name in BLOCK_LISTS:
            blocks = getattr(module, name, None)
            if isinstance(blocks, torch.nn.ModuleList):
                for block in blocks:
                    fully_shard(block)
        middle = getattr(module, "middle_block", None)
        if isinstance(middle, torch.nn.Module):
            fully_shard(middle)
    fully_shard(model)
    return model


def full_state(module: torch.nn.Module) -> dict[str, Tensor]:
    """The full (unsharded) state dict of an FSDP module on rank 0, on the CPU ({} on other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(module: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """Load a full state dict (every rank passes it) into an FSDP module, each rank keeping its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser state of an FSDP model, gathered on rank 0, in the one-process layout (parameters by
    index in ``model.named_parameters()`` order). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    if not full:
        return {}
    return {"state": {index[k]: v for k, v in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a one-process-layout optimiser state into the optimiser of an FSDP model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [name for name, _ in model.named_parameters()]
    full = {"state": {names[int(i)]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers, copied to every rank (what DDP does when it wraps a model)."""
    if is_distributed():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


class StateHolder(torch.nn.Module):
    """A stand-in for a module whose full state was gathered (FSDP): ``state_dict()`` returns it, for writers
    that only read a module's state."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        self._full = state

    def state_dict(self, *args, **kwargs) -> dict[str, Tensor]:  # noqa: ARG002
        return dict(self._full)
