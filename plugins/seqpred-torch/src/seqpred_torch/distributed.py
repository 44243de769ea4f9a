"""Data-parallel training on torch.distributed: the core's replicas in torch's own terms.

One process per replica. The process group is gloo on the processor and NCCL on GPUs (each process
takes the GPU of its ``LOCAL_RANK``); gradients are averaged by ``DistributedDataParallel`` during the
backward pass, and the core's sums (losses, stop decisions, validation) by ``all_reduce``. Processes
are started by ``torchrun`` or, for ``seqpred train --replicas N``, by torch's elastic launcher, the
engine behind torchrun (:func:`launch`).
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqpred.distributed import Replicas

#: How long a process waits for the others in one collective before it gives up.
TIMEOUT = timedelta(minutes=10)


def uses_cuda(device: str) -> bool:
    """Whether the run's ``--device`` puts the replicas on GPUs."""
    kind = device.partition(":")[0]
    return kind == "cuda" or (kind == "auto" and torch.cuda.is_available())


def replica_device(replicas: Replicas) -> torch.device:
    """This process's device: the GPU of its local rank (``--device cuda``, ``auto``), or the processor."""
    if not uses_cuda(replicas.device):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but torch sees no GPU; use --device cpu")
    count = torch.cuda.device_count()
    if replicas.local_rank >= count:
        raise RuntimeError(
            f"process {replicas.local_rank} of this machine has no GPU of its own (torch sees {count}); "
            f"start at most {count} processes per machine"
        )
    return torch.device("cuda", replicas.local_rank)


class TorchCollective:
    """The core's :class:`seqpred.distributed.Collective` on the default process group."""

    def __init__(self, device: torch.device):
        self.device = device

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def join(replicas: Replicas) -> TorchCollective:
    """Join the process group the launcher's environment describes (``env://``)."""
    device = replica_device(replicas)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=replicas.rank,
            world_size=replicas.processes,
            timeout=TIMEOUT,
        )
    return TorchCollective(device)


def data_parallel(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` wrapped so that its backward pass averages the gradients over every replica.

    DDP first broadcasts rank 0's parameters; the core has given every replica the same ones anyway.
    """
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def launch(count: int, worker, args: tuple) -> None:
    """Start ``count`` processes on this machine with torch's elastic launcher, as
    ``torchrun --standalone --nproc_per_node count`` does, each calling ``worker(*args)``."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=count,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        # Ctrl-C reaches every process of the terminal's group: the workers stop together at the same
        # step and save; the launcher itself waits for them instead of cutting them short.
        signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",
    )
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    # The workers report their own errors in one line; the launcher's log of them is a traceback.
    log = logging.getLogger("torch.distributed.elastic")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, worker)(*args)
    finally:
        log.setLevel(level)
        if main:
            signal.signal(signal.SIGINT, previous)
