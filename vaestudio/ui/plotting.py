"""Small pyqtgraph pieces the tabs share."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg


class IntegerAxis(pg.AxisItem):
    """An axis whose ticks are whole numbers (epochs): never 1.5 or 2.5."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph API
        span = max(1.0, maxVal - minVal)
        step = max(1, int(np.ceil(span / max(2, size / 60))))
        first = int(np.ceil(minVal))
        return [(step, list(range(first, int(np.floor(maxVal)) + 1, step)))]
