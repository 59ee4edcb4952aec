"""Running under torchrun: one process per device, PyTorch's own process group (no cluster of ours).

``torchrun --nproc_per_node=N -m vaestudio evaluate ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
``Dist.from_env`` joins the process group (NCCL on CUDA with ``cuda:LOCAL_RANK``, gloo on the CPU).
Image ``i`` is evaluated by rank ``i % world_size``. At the end the ranks add their FID statistics
(``all_reduce``); accumulator sums and rows are gathered to rank 0, which adds the sums (so
accumulators whose keys differ between ranks still combine) and writes the outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist


def env_world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """This process's rank under torchrun (0 without it), known before the process group is joined."""
    return int(os.environ.get("RANK", "0") or 0) if env_world_size() > 1 else 0


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str | None = None  # the device this rank should use, when the environment decides it
    _owned: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> Dist:
        world = env_world_size()
        if world <= 1:
            return cls()
        rank = env_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
        if use_cuda:
            dev = f"cuda:{local}"
            torch.cuda.set_device(local)
            backend = "nccl"
        else:
            dev = "cpu" if device == "auto" else device  # "cuda" without CUDA fails at load, with its reason
            backend = "gloo"
            # the processes of one machine share its cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
        owned = False
        if not tdist.is_initialized():
            tdist.init_process_group(backend=backend)
            owned = True
        return cls(rank, world, local, backend, dev, owned)

    def tensor_device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks (returned on the CPU)."""
        if not self.active:
            return t
        x = t.to(self.tensor_device())
        tdist.all_reduce(x, op=tdist.ReduceOp.SUM)
        return x.cpu()

    def sum_feature_stats(self, st) -> None:
        """Replace the count and sums of a ``fid.FeatureStats`` by their totals over ranks."""
        st.n = int(self.all_reduce_(torch.tensor([float(st.n)], dtype=torch.float64)).item())
        st.sum = self.all_reduce_(st.sum)
        st.outer = self.all_reduce_(st.outer)

    def agree(self, ok: bool) -> bool:
        """True when every rank says ok (so all ranks stop together on an error any of them saw)."""
        if not self.active:
            return ok
        t = torch.tensor([1 if ok else 0], dtype=torch.int64, device=self.tensor_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        tdist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def __enter__(self) -> Dist:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leave the process group. After a run that completed the ranks meet at a barrier first, so that
        none tears its gloo connections down while another is still receiving from it (a rank of a
        two-process clip evaluation once aborted at exit, "terminate called without an active exception",
        in CI); after one that failed they do not, since its peers may be in another collective."""
        try:
            if exc_type is None:
                self.barrier()
        finally:
            self.close()

    def close(self) -> None:
        if self._owned and tdist.is_initialized():
            tdist.destroy_process_group()
            self._owned = False
