"""Several processes share a meta-batch: ``torch.distributed`` as launched by ``torchrun``.

The engine splits the tasks of every meta-batch (and of every evaluation) into contiguous
shards, one per rank. Each rank runs the unchanged meta-learner on its shard and passes it the
:class:`~warpgrad.core.shell.Reduction` of :meth:`Cluster.reduction` explicitly
(``learner.meta_step(tasks, generator, reduction)``); every meta-gradient the learner's shell
applies goes through its weighted all-reduce: rank r's shard mean times ``n_r / N``, summed over
ranks, is the mean over the whole meta-batch. Every rank then takes the same optimiser step, so the
meta-parameters stay identical on all ranks without being broadcast.

This equals a one-process run exactly (up to floating-point summation order) for every method
whose meta-gradient is a mean of per-task terms with the same weight per task: MAML, FOMAML,
Meta-SGD, T-Nets, Reptile, Leap, fine-tuning, online WarpGrad, and offline WarpGrad while its
replay buffer holds every trajectory point of the meta-batch. With a smaller buffer each rank
keeps its own reservoir of its shard's points, of its share of ``buffer_size`` (and draws its share
of ``warp_batch``): the same budget in total, an unbiased estimate of the same objective rather
than the same numbers. The per-task randomness that makes this possible
(each task samples its data and batches from its own seed, whichever rank runs it) is set up in
:mod:`warpgrad.engine.loop`.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``).

Example (2 processes on one machine)::

    torchrun --standalone --nproc_per_node 2 -m warpgrad run sine --method warpgrad
    warpgrad run sine --method warpgrad --nproc 2          # the same ranks, launched by :func:`launch`
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from warpgrad.core.shell import LOCAL, Reduction
from warpgrad.errors import UsageError

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # bf16: meta-steps under autocast (warpgrad.engine.loop)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda`` as a device; a clear error when CUDA is asked for and absent."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for, but torch sees no CUDA GPU here; use --device cpu")
    return torch.device(name)


def check_precision(precision: str) -> None:
    """Raise unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a ``torchrun`` launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Cluster:
    """This process's place among the ranks, and its device. ``Cluster()`` is one CPU process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    # seconds this rank spent in collectives, waiting for the other ranks included
    clock: dict[str, float] = field(default_factory=lambda: {"collective_s": 0.0}, compare=False, repr=False)

    @classmethod
    def from_environment(cls, device: str = "cpu") -> Cluster:
        """One process (``WORLD_SIZE`` unset or 1) or this rank of a ``torchrun`` launch.

        Joins the process group (gloo on CPU, nccl on CUDA) if it is not joined yet; on CUDA
        each rank uses the GPU ``LOCAL_RANK``.
        """
        resolved = resolve_device(device)
        if not launched_by_torchrun():
            return cls(device=resolved)
        if resolved.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise UsageError(
                    f"rank with LOCAL_RANK {local} has no GPU: {torch.cuda.device_count()} visible; "
                    "launch at most one process per GPU"
                )
            torch.cuda.set_device(local)
            resolved = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), resolved)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes outputs, checkpoints and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
        return range(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def check_divisible_work(self, what: str, n: int) -> None:
        """Raise unless every rank gets at least one of ``n`` items."""
        if self.distributed and n < self.world_size:
            raise UsageError(
                f"{what} = {n} is smaller than the number of processes ({self.world_size}); "
                f"every process needs at least one task"
            )

    # ------------------------------------------------------------------ collectives
    def reduction(self, n_total: int) -> Reduction:
        """This rank's :class:`Reduction` for a meta-batch of ``n_total`` tasks: the weighted
        all-reduce of its shard's mean gradients, and its share of the meta-batch."""
        if not self.distributed:
            return LOCAL
        weight = len(self.shard(n_total)) / n_total

        def reduce(grads: list[Tensor]) -> list[Tensor]:
            return self._weighted_sum(grads, weight)

        return Reduction(reduce, weight)

    def _weighted_sum(self, tensors: list[Tensor], weight: float) -> list[Tensor]:
        out: list[Tensor | None] = [None] * len(tensors)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for indices in by_dtype.values():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices]) * weight
            with self._timed():
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for i, piece in zip(indices, flat.split([tensors[i].numel() for i in indices])):
                out[i] = piece.view_as(tensors[i])
        return out  # type: ignore[return-value]

    def mean_metrics(self, metrics: dict[str, float], n_total: int) -> dict[str, float]:
        """Per-shard mean metrics → meta-batch means (the same weights as the gradients)."""
        if not self.distributed or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self.device)
        (total,) = self._weighted_sum([values], len(self.shard(n_total)) / n_total)
        return dict(zip(keys, total.tolist()))

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order (so shards come back in task order)."""
        if not self.distributed:
            return list(items)
        parts: list[Any] = [None] * self.world_size
        with self._timed():
            dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        with self._timed():
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            with self._timed():
                dist.barrier()

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.clock["collective_s"] += time.perf_counter() - start

    def close(self) -> None:
        """Leave the process group (a rank that exits with it still open may abort in gloo's threads)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch(arguments: list[str], nproc: int, threads_per_process: int | None = None) -> int:
    """Run ``python -m warpgrad ARGUMENTS`` as ``nproc`` ranks on this machine; the exit code.

    Sets the environment ``torchrun --standalone`` sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``), without torchrun's agent: Ctrl-C reaches the ranks
    directly (they agree to stop after the same meta-step and checkpoint it), and if a rank fails
    the others are stopped. The exit code is the first failing rank's, else 0.
    """
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc)
    base = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
    }
    base.setdefault("OMP_NUM_THREADS", str(threads))
    if os.path.exists("/sys/class/net/lo"):  # all ranks are local: keep gloo off other interfaces
        base.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "warpgrad", *arguments],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(nproc)
    ]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks get the terminal's Ctrl-C themselves
    try:
        failed: int | None = None
        while any(p.poll() is None for p in ranks):
            codes = [p.returncode for p in ranks if p.returncode not in (None, 0)]
            if codes and failed is None:
                failed = codes[0]
                deadline = time.monotonic() + 10.0  # let the others finish their own way first
            if failed is not None and time.monotonic() > deadline:
                for p in ranks:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.05)
        codes = [p.returncode for p in ranks]
        return next((c for c in codes if c != 0), 0)
    finally:
        signal.signal(signal.SIGINT, previous)
        for p in ranks:
            if p.poll() is None:
                p.kill()


__all__ = [
    "Cluster",
    "launch",
    "DEVICES",
    "PRECISIONS",
    "check_precision",
    "launched_by_torchrun",
    "resolve_device",
]
