"""What the analyses share: the progress record, cancellation, the accumulator protocol, helpers."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from vaestudio.core.errors import Cancelled
from vaestudio.core.tiling import Progress, ShouldStop

R = TypeVar("R")


@dataclass(frozen=True)
class Step:
    """Progress of an analysis: ``done`` of ``total`` steps finished; ``what`` is running next."""

    done: int
    total: int
    what: str


class Steps:
    """Counts an analysis's steps, reports them to the ``progress`` callback and checks for cancellation."""

    def __init__(self, total: int, progress: Progress | None, should_stop: ShouldStop | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress
        self.should_stop = should_stop

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()

    def start(self, what: str) -> Step:
        """The record to yield before a step (raises ``Cancelled`` when asked to stop)."""
        self.check()
        return Step(self.done, self.total, what)

    def finish(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def drive(gen: Generator[Any, None, R] | Iterator[Any], on_step: Callable[[Step], None] | None = None) -> R:
    """Run an analysis generator to its result, passing each ``Step`` to ``on_step``."""
    result = None
    try:
        while True:
            item = next(gen)
            if isinstance(item, Step):
                if on_step is not None:
                    on_step(item)
            else:
                result = item
    except StopIteration as stop:
        return stop.value if stop.value is not None else result


class Accumulator(Protocol):
    """Dataset-wide statistics that can be summed across processes (see the package docstring).

    Also what ``vaestudio.core.evaluate.accumulators`` calls a summing accumulator: ``name``,
    ``update``, ``state``/``load_state``, and ``result()``/``html()`` with no argument (then they use
    the accumulator's own state).
    """

    name: str

    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor | None,
               raw_latents: torch.Tensor | None) -> None: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def result(self, state: dict[str, torch.Tensor] | None = None) -> dict: ...

    def html(self, result: dict | None = None) -> str | None: ...


def add_states(*states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ``torch.distributed.all_reduce(SUM)`` does to each tensor of ``state()``, for one process."""
    out = {k: v.clone() for k, v in states[0].items()}
    for s in states[1:]:
        for k, v in s.items():
            out[k] = out[k] + v
    return out


def json_float(x: float | None, digits: int = 6) -> float | None:
    """A float for JSON: None stands for infinite or undefined (e.g. the PSNR of identical images)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float image to a (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
