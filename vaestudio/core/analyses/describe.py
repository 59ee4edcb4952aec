"""What an analysis says about itself, once, for every front end: options, table, summary, figure, pictures.

An ``Analysis`` record (one per analysis, in its own ``about_*.py`` module) holds

- its **options** (``Option``: name, type, default, range, help), from which the CLI makes its
  arguments and the window its option page, and which ``Analysis.check`` validates for both;
- its **table** (``Column`` and ``rows``): the CSV's columns and the window's table;
- its **summary**: the one line the CLI prints for each image and VAE (the window shows it too);
- its **figure** (``Figure`` of ``Chart`` of ``Series``): what the PNG shows and the window plots,
  drawn by ``plotting.draw_figure`` (Pillow) and by the window (pyqtgraph) from the same record;
- its **pictures** (``Picture``): images shown under the plots, and the extra files the CLI writes.

Tables, summaries and figures are made from ``result.to_dict()`` (the JSON numbers, null where a
value is undefined), so a dataset average (an accumulator's ``result()``) draws like one image's
result. This module, and every ``about_*`` module, imports neither torch nor numpy: the CLI's parser
is built from them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: (label, result.to_dict()) for each VAE, in order: what tables and figures are made from.
Labelled = Sequence[tuple[str, dict]]


def parse_sizes(text: str) -> list[int]:
    """Pixel sizes typed as "64, 128" (tile sizes, overlaps) as whole numbers >= 0.

    Raises ValueError with a sentence to show when the text is not that.
    """
    try:
        values = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"expected whole numbers >= 0 separated by commas (e.g. 64, 128), got '{text}'")
    return values


@dataclass(frozen=True)
class Option:
    """One option of an analysis: a keyword of its run function.

    ``kind`` is "int", "float", "choice" (one of ``choices``) or "sizes" (whole numbers typed as
    "64, 128"). ``minimum`` is the smallest value allowed (``positive``: a finite number > 0 instead);
    ``maximum`` bounds the window's spin box only. ``auto``: the default None means "chosen from the
    image" (the window offers it as the spin box's lowest entry).
    """

    name: str
    kind: str
    default: Any
    help: str
    label: str  # the window's label
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] = ()
    auto: str = ""  # what None means, when the default is None
    unit: str = ""  # shown after the window's label: "Tile sizes (px)"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """A value typed as text (sizes), or raises ValueError with a sentence."""
        if self.kind == "sizes":
            return parse_sizes(text)
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        if text not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got '{text}'")
        return text

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be at least 1"), or None."""
        if value is None:
            return None if self.auto else "is missing"
        if self.positive and not (value > 0 and math.isfinite(value)):
            return "must be a finite number > 0"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum:g}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return None


@dataclass(frozen=True)
class Column:
    """A column of the table: the CSV's field ``key`` and the window's ``header``.

    ``spec`` formats numbers in the window; ``missing`` is the window's text for null (blank, or
    "inf" where null stands for an infinite PSNR). The CSV writes null as an empty field.
    """

    key: str
    header: str
    spec: str = ".4g"
    missing: str = ""

    def text(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.missing
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, self.spec)
        return str(value)


@dataclass(frozen=True)
class Series:
    """A curve (or bars, or dots) in a chart. ``vae``: the VAE's index in the palette (None: black)."""

    x: Sequence[float]
    y: Sequence[float | None]
    vae: int | None
    dash: int = 0  # 0: solid; else the dash length in pixels (7 dashed, 2 dotted)
    width: int = 2
    markers: bool = False
    style: str = "line"  # "line", "bars" or "dots" (markers only)


@dataclass(frozen=True)
class Chart:
    """One plot: titles, its series, lines drawn across at ``hlines``, and what the y axis must show."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    logy: bool = False
    hlines: tuple[float, ...] = ()
    include: tuple[float, ...] = ()  # y values always inside the axis
    xlim: tuple[float, float] | None = None
    xticks: Sequence[tuple[float, str]] | None = None  # (position, label); None: automatic
    integer_x: bool = False
    note: str = ""  # one grey line under the chart
    warn: bool = False  # the note is a warning (red)


@dataclass(frozen=True)
class Picture:
    """An image under the plots (``rgb``: (H, W, 3) float in [0, 1] or uint8); ``file``: also written
    by the CLI as ``<image>_<vae>_<file>.png``, listed in ``outputs`` as ``key``."""

    caption: str
    rgb: Any
    key: str = ""
    file: str = ""


@dataclass(frozen=True)
class Figure:
    title: str
    charts: Sequence[Chart]
    columns: int = 2  # charts per row


def _no_check(values: dict) -> None:
    return None


def _no_warning(d: dict) -> None:
    return None


def _no_pictures(results: Sequence[tuple[str, Any]], image: str) -> list[Picture]:
    return []


@dataclass(frozen=True)
class Analysis:
    """One analysis, described once (see the module docstring)."""

    name: str
    title: str
    question: str  # what it answers, in the user's words
    run: str  # "module:function" of the generator (imported on use: it needs torch)
    options: tuple[Option, ...]
    columns: tuple[Column, ...]  # after the "vae" column
    rows: Callable[[dict], list[dict]]  # table rows of one VAE's numbers
    summary: Callable[[dict], str]  # the CLI's line for one VAE's numbers
    figure: Callable[[Labelled], Figure]
    pictures: Callable[[Sequence[tuple[str, Any]], str], list[Picture]] = _no_pictures
    check: Callable[[dict], None] = _no_check  # raises ValueError on option values that do not go together
    warning: Callable[[dict], str | None] = _no_warning  # a sentence to print and show, from the numbers

    def function(self) -> Callable:
        """The generator function (imports torch)."""
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)

    def defaults(self) -> dict:
        return {o.name: o.default for o in self.options}

    def validate(self, values: dict, name_of: Callable[[Option], str]) -> dict:
        """The options' values, checked; raises ValueError naming the option as ``name_of`` says
        (the CLI's flag, the window's label)."""
        for o in self.options:
            problem = o.problem(values.get(o.name))
            if problem:
                raise ValueError(f"{name_of(o)} {problem}")
        self.check(values)
        return {o.name: values.get(o.name) for o in self.options}

    def table(self, results: Labelled) -> list[dict]:
        """Every VAE's rows, each starting with its ``vae`` label."""
        return [{"vae": label, **row} for label, d in results for row in self.rows(d)]

    @property
    def fields(self) -> list[str]:
        return ["vae", *(c.key for c in self.columns)]
