"""Per-VAE statistics from rows: mean, std, median, 5th and 95th percentile of each metric, and the
dataset-wide PSNR (from the pixel-weighted mean squared error, as torchmetrics' PSNR computes it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaestudio.core.evaluate.types import ROW_METRICS, UNREADABLE, Row
from vaestudio.core.metrics import json_float


@dataclass
class Columns:
    """One VAE's rows as columns (numbers only), plus its failures."""

    images: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(
        default_factory=lambda: {m: [] for m in (*ROW_METRICS, "mse", "pixels", "frames")})
    failures: list[dict[str, str]] = field(default_factory=list)

    def add(self, r: Row) -> None:
        if r.error:
            self.failures.append({"image": r.image, "reason": r.error})
            return
        self.images.append(r.image)
        for m in ROW_METRICS:
            v = getattr(r, m)
            self.values[m].append(math.nan if v is None else float(v))
        self.values["mse"].append(math.nan if r.mse is None else float(r.mse))
        self.values["pixels"].append(float((r.width or 0) * (r.height or 0) * 3 * (r.frames or 1)))
        self.values["frames"].append(math.nan if r.frames is None else float(r.frames))  # NaN: an image

    @property
    def clips(self) -> int:
        return int(np.isfinite(self.array("frames")).sum())

    def only_clips(self) -> Columns:
        """The clips' rows alone."""
        keep = np.flatnonzero(np.isfinite(self.array("frames"))).tolist()
        return Columns([self.images[i] for i in keep], {k: [v[i] for i in keep] for k, v in self.values.items()})

    def array(self, metric: str) -> np.ndarray:
        return np.asarray(self.values[metric], dtype=np.float64)


def collect(rows: Iterable[Row]) -> dict[str, Columns]:
    """Rows grouped by VAE source, in image order as given."""
    out: dict[str, Columns] = {}
    for r in rows:
        out.setdefault(r.source, Columns()).add(r)
    for c in out.values():
        c.failures.sort(key=lambda f: f["image"])
    return out


def unreadable_images(cols: dict[str, Columns]) -> list[dict[str, str]]:
    """The images that could not be read (for any VAE), once each, sorted: [{"image", "reason"}]."""
    found: dict[str, str] = {}
    for c in cols.values():
        for f in c.failures:
            if f["reason"].startswith(UNREADABLE):
                found.setdefault(f["image"], f["reason"][len(UNREADABLE):])
    return [{"image": k, "reason": found[k]} for k in sorted(found)]


def metric_stats(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": None, "std": None, "median": None, "p5": None, "p95": None}
    v = np.sort(v)  # sums in a fixed order: the same rows in any order give the same numbers
    values = {"mean": np.mean(v), "std": np.std(v), "median": np.median(v),
              "p5": np.percentile(v, 5), "p95": np.percentile(v, 95)}
    return {k: json_float(float(x), None) for k, x in values.items()}


def vae_stats(cols: Columns) -> dict[str, float | None]:
    """Each metric's five statistics (``flicker_*`` over the clips alone: None without clips) and
    ``psnr_dataset`` (a clip's pixels are all its frames')."""
    out: dict[str, float | None] = {}
    for m in ROW_METRICS:
        for k, v in metric_stats(cols.array(m)).items():
            out[f"{m}_{k}"] = v
    mse, pix = cols.array("mse"), cols.array("pixels")
    ok = np.isfinite(mse)
    if ok.any():
        order = np.lexsort((pix[ok], mse[ok]))
        total = float(np.sum((mse[ok] * pix[ok])[order]))
        n = float(np.sum(pix[ok][order]))
        dataset_mse = total / n
        out["psnr_dataset"] = None if dataset_mse <= 0 else 10.0 * math.log10(1.0 / dataset_mse)
    else:
        out["psnr_dataset"] = None
    return out


N_EXAMPLES = 8  # worst and best images per VAE (report, window)


def pick_examples(cols: Columns) -> dict[str, list[tuple[str, float, str]]]:
    """The worst and best images by PSNR (else SSIM, MAE or LPIPS): {"worst": [(image, value, metric)]}.

    Up to ``N_EXAMPLES`` each, and never an image in both: with fewer than twice that, "best" is what
    "worst" left (the window shows the worst alone, always the full ``N_EXAMPLES`` when there are)."""
    for metric, higher in (("psnr", True), ("ssim", True), ("mae", False), ("lpips", False)):
        v = cols.array(metric)
        ok = np.flatnonzero(np.isfinite(v))
        if ok.size:
            order = ok[np.lexsort((np.array(cols.images, dtype=object)[ok].astype(str), v[ok]))]
            if not higher:
                order = order[::-1]  # worst first
            n_worst = min(N_EXAMPLES, order.size)
            n_best = min(N_EXAMPLES, order.size - n_worst)
            worst, best = order[:n_worst].tolist(), order[::-1][:n_best].tolist()
            return {"worst": [(cols.images[i], float(v[i]), metric) for i in worst],
                    "best": [(cols.images[i], float(v[i]), metric) for i in best]}
    return {}


def pick_clips(cols: Columns) -> list[tuple[str, float, str]]:
    """The worst ``N_EXAMPLES`` clips (by their mean PSNR, else as ``pick_examples``), for the report's
    section of clips."""
    return pick_examples(cols.only_clips()).get("worst", []) if cols.clips else []


def metric_notes(vaes: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    """What rFID and LPIPS are, or why they are missing (a "-" in the table): ``(metric, vae, text)``,
    ``vae`` None when the text is the same for all. The report and the CLI's table say the same."""
    notes: list[tuple[str, str | None, str]] = []
    for what, key in (("rFID", "rfid_status"), ("LPIPS", "lpips_status")):
        texts = {v[key] for v in vaes}
        if len(texts) == 1:
            notes.append((what, None, texts.pop()))
        else:
            notes += [(what, v["vae"], v[key]) for v in vaes]
    return notes
