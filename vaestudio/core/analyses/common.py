"""What the analyses share: the progress record, cancellation, the accumulator protocol, helpers."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

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


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float image to a (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
