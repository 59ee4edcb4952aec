"""report.html: one self-contained page (inline CSS, SVG charts, PNG thumbnails as data URIs) that
opens offline: the per-VAE table, histograms of each metric with the VAEs overlaid, per-image
scatters of one VAE against another, the worst and best images of each VAE as original |
reconstruction | difference, and the protocol."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch

from vaestudio.core.analyses.plotting import PALETTE as RGB_PALETTE
from vaestudio.core.errors import Cancelled
from vaestudio.core.evaluate.data import ImageDataset, ImageItem, PreparedClip, PreparedImage
from vaestudio.core.evaluate.summary import Columns, metric_notes
from vaestudio.core.evaluate.types import EvaluationProtocol
from vaestudio.core.files import write_atomic

#: the VAEs' colours of the window and the CLI's pictures
PALETTE = ["#{:02x}{:02x}{:02x}".format(*c) for c in RGB_PALETTE]
#: (metric, label, higher is better)
CHART_METRICS = [("psnr", "PSNR (dB)", True), ("ssim", "SSIM", True), ("mae", "MAE", False),
                 ("lpips", "LPIPS", False), ("color_shift_r", "Colour shift R", None),
                 ("color_shift_g", "Colour shift G", None), ("color_shift_b", "Colour shift B", None),
                 ("flicker", "Flicker (clips)", False)]
THUMB = 192
MAX_SCATTER_POINTS = 4000


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3e}"
    return f"{v:.{digits}f}"


# -- examples ---------------------------------------------------------------------------------

def _png_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    from vaestudio.core.images import to_uint8

    im = Image.fromarray(to_uint8(rgb))
    if max(im.size) > THUMB:
        im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, str]:
    from vaestudio.core.metrics import colorize, difference_map

    a = original.permute(1, 2, 0).numpy()
    b = reconstruction.permute(1, 2, 0).numpy()
    return {"original": _png_uri(a), "reconstruction": _png_uri(b), "difference": _png_uri(colorize(difference_map(a, b)))}


def _clip_thumbnails(seen: torch.Tensor, rec: torch.Tensor, protocol: EvaluationProtocol) -> dict[str, Any]:
    """A clip's worst frame (as its row picks it) as thumbnails, with the frame's index and the count."""
    from vaestudio.core.evaluate.clips import worst_frame
    from vaestudio.core.evaluate.measure import batch_metrics
    from vaestudio.core.metrics import flicker

    k = worst_frame(batch_metrics(seen, rec, protocol.metrics, False)) or 0
    fl = flicker(seen.permute(0, 2, 3, 1).numpy(), rec.permute(0, 2, 3, 1).numpy())
    return {**thumbnails(seen[k], rec[k]), "frame": k, "frames": int(seen.shape[0]), "flicker": fl}


def example_thumbnails(picks: dict[str, list[tuple[str, float, str]]], items: list[ImageItem], protocol: EvaluationProtocol,
                       batch_size: int, roundtrip: Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, torch.Tensor]],
                       clip_trip: Callable[[PreparedClip], tuple[torch.Tensor, torch.Tensor]] | None = None,
                       ) -> dict[str, list[dict[str, Any]]]:
    """One VAE's picked images (``summary.pick_examples``) read again and run through ``roundtrip``
    (a batch and its paths -> what the VAE saw and its reconstruction), for thumbnails: rows hold only
    numbers; a picked clip through ``clip_trip`` (its frames, seen and reconstructed), shown by its
    worst frame. An image that fails is left out; a thumbnail is not worth failing the report."""
    by_path = {it.path: it for it in items}
    wanted = list(dict.fromkeys(image for entries in picks.values() for image, _, _ in entries))
    ds = ImageDataset([by_path[p] for p in wanted if p in by_path], protocol.size, protocol.resize, protocol.frames)
    groups: dict[tuple[int, ...], list[PreparedImage]] = {}
    thumbs: dict[str, dict[str, Any]] = {}
    for x in (ds[i] for i in range(len(ds))):
        if isinstance(x, PreparedImage):
            groups.setdefault(tuple(x.pixels.shape), []).append(x)
        elif isinstance(x, PreparedClip) and clip_trip is not None:
            try:
                thumbs[x.item.path] = _clip_thumbnails(*clip_trip(x), protocol)
            except Cancelled:
                raise
            except Exception:  # noqa: BLE001
                continue
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            try:
                seen, rec = roundtrip(torch.stack([g.pixels for g in part]), [g.item.path for g in part])
            except Cancelled:
                raise
            except Exception:  # noqa: BLE001
                continue
            for j, g in enumerate(part):
                thumbs[g.item.path] = thumbnails(seen[j], rec[j])
    return {which: [{"image": image, "metric": metric, "value": value, "thumbs": thumbs[image]}
                    for image, value, metric in entries if image in thumbs]
            for which, entries in picks.items()}


# -- charts -----------------------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(step))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= step), default=step)
    start = math.ceil(lo / step) * step
    out = []
    t = start
    while t <= hi + 1e-12 * max(1.0, abs(hi)):
        out.append(round(t, 10))
        t += step
    return out


def histogram_svg(series: list[tuple[str, str, np.ndarray]], label: str, bins: int = 30) -> str:
    """Overlaid step histograms (one per VAE) over shared bins."""
    data = [(n, c, v[np.isfinite(v)]) for n, c, v in series]
    allv = np.concatenate([v for _, _, v in data]) if data else np.array([])
    if allv.size == 0:
        return ""
    lo, hi = float(np.percentile(allv, 0.5)), float(np.percentile(allv, 99.5))
    if hi <= lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(np.clip(v, lo, hi), bins=edges)[0] for _, _, v in data]
    ymax = max(1, max(int(c.max()) for c in counts))
    W, H, L, R, T, Bm = 360, 190, 40, 10, 10, 34
    pw, ph = W - L - R, H - T - Bm

    def sx(x: float) -> float:
        return L + (x - lo) / (hi - lo) * pw

    def sy(y: float) -> float:
        return T + ph - y / ymax * ph

    parts = [f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{esc(label)} histogram">']
    parts.append(f'<line class="axis" x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}"/>')
    for t in _ticks(lo, hi):
        parts.append(f'<line class="axis" x1="{sx(t):.1f}" y1="{T + ph}" x2="{sx(t):.1f}" y2="{T + ph + 4}"/>'
                     f'<text x="{sx(t):.1f}" y="{T + ph + 16}" text-anchor="middle">{t:.4g}</text>')
    parts.append(f'<text x="{L - 4}" y="{T + 8}" text-anchor="end">{ymax}</text>'
                 f'<text x="{L - 4}" y="{T + ph}" text-anchor="end">0</text>'
                 f'<text x="{L + pw / 2:.1f}" y="{H - 2}" text-anchor="middle">{esc(label)} · images per bin</text>')
    for (name, color, _), c in zip(data, counts, strict=True):
        pts = [f"{sx(edges[0]):.1f},{sy(0):.1f}"]
        for i, k in enumerate(c):
            pts.append(f"{sx(edges[i]):.1f},{sy(k):.1f}")
            pts.append(f"{sx(edges[i + 1]):.1f},{sy(k):.1f}")
        pts.append(f"{sx(edges[-1]):.1f},{sy(0):.1f}")
        parts.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.18" stroke="{color}" '
                     f'stroke-width="1.5"><title>{esc(name)}</title></polygon>')
    parts.append("</svg>")
    return "".join(parts)


#: How many characters of a VAE's name an axis of a scatter has room for (the full name is its tooltip).
AXIS_CHARS = 44


def _fit(name: str, n: int) -> str:
    """``name`` in at most ``n`` characters: its start and its end around an ellipsis."""
    if len(name) <= n:
        return name
    head = (n - 1) // 2
    return name[:head] + "…" + name[len(name) - (n - 1 - head):]


def scatter_svg(a_name: str, b_name: str, xs: np.ndarray, ys: np.ndarray, label: str, color: str) -> str:
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size == 0:
        return ""
    if xs.size > MAX_SCATTER_POINTS:
        step = math.ceil(xs.size / MAX_SCATTER_POINTS)
        xs, ys = xs[::step], ys[::step]
    lo = float(min(xs.min(), ys.min()))
    hi = float(max(xs.max(), ys.max()))
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.04
    lo, hi = lo - pad, hi + pad
    S, L, T, Bm = 330, 44, 10, 36
    p = S - L - 10

    def sx(x: float) -> float:
        return L + (x - lo) / (hi - lo) * p

    def sy(y: float) -> float:
        return T + p - (y - lo) / (hi - lo) * p

    parts = [f'<svg viewBox="0 0 {S} {S + Bm - 10}" width="100%" role="img" '
             f'aria-label="{esc(label)}: {esc(a_name)} against {esc(b_name)}">']
    parts.append(f'<rect class="axis" x="{L}" y="{T}" width="{p}" height="{p}" fill="none"/>')
    parts.append(f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" y2="{sy(hi):.1f}" '
                 'stroke="currentColor" stroke-opacity="0.35" stroke-dasharray="4 3"/>')
    for t in _ticks(lo, hi, 4):
        parts.append(f'<text x="{sx(t):.1f}" y="{T + p + 14}" text-anchor="middle">{t:.4g}</text>'
                     f'<text x="{L - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2"/>' for x, y in zip(xs, ys, strict=True))
    parts.append(f'<g fill="{color}" fill-opacity="0.55">{dots}</g>')
    parts.append(f'<text x="{L + p / 2:.1f}" y="{T + p + 30}" text-anchor="middle"><title>{esc(a_name)}</title>'
                 f'{esc(_fit(a_name, AXIS_CHARS - len(label) - 3))} ({esc(label)})</text>')
    parts.append(f'<text x="12" y="{T + p / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 {T + p / 2:.1f})">'
                 f'<title>{esc(b_name)}</title>{esc(_fit(b_name, AXIS_CHARS))}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page ---------------------------------------------------------------------------------

def _table(summary: dict[str, Any]) -> str:
    vaes = summary["vaes"]
    cols = [("psnr_mean", "PSNR mean", True, 2), ("psnr_std", "± std", None, 2), ("psnr_dataset", "PSNR dataset", True, 2),
            ("ssim_mean", "SSIM", True, 4), ("mae_mean", "MAE", False, 4), ("lpips_mean", "LPIPS", False, 4),
            ("rfid", "rFID", False, 3)]
    if any(v.get("clips") for v in vaes):
        cols += [("clips", "clips", None, 0), ("flicker_mean", "flicker", False, 5)]
    best: dict[str, float] = {}
    for key, _, higher, _ in cols:
        vals = [v[key] for v in vaes if isinstance(v.get(key), (int, float))]
        if vals and higher is not None and len(vaes) > 1:
            best[key] = max(vals) if higher else min(vals)
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _, _ in cols)
    rows = []
    for i, v in enumerate(vaes):
        color = PALETTE[i % len(PALETTE)]
        cells = []
        for key, _, _, digits in cols:
            val = v.get(key)
            cls = ' class="best"' if key in best and val == best[key] else ""
            cells.append(f"<td{cls}>{esc(fmt(val, digits))}</td>")
        shift = " ".join(fmt(v.get(f"color_shift_{c}_mean"), 4) for c in "rgb")
        rows.append(f'<tr><td class="l vae"><i style="display:inline-block;width:10px;height:10px;border-radius:2px;'
                    f'background:{color}"></i> <b>{esc(v["vae"])}</b>'
                    + (f'<br><span class="note">{esc(v["source"])}</span>' if v["source"] != v["vae"] else "") + '</td>'
                    f'<td class="l">{esc(v["architecture"])}</td><td class="l">{esc(v["family"])}</td>'
                    f'<td>{v["images"]}</td><td>{v["failed"]}</td>{"".join(cells)}<td class="shift">{esc(shift)}</td></tr>')
    notes = [f"<li>{esc(what)}{f', <b>{esc(vae)}</b>' if vae else ''}: {esc(text)}</li>"
             for what, vae, text in metric_notes(vaes)]
    return (f'<div class="wrap"><table><tr><th class="l">VAE</th><th class="l">architecture</th><th class="l">family</th>'
            f'<th>images</th><th>failed</th>{head}<th>colour shift R G B</th></tr>{"".join(rows)}</table></div>'
            f'<p class="note">PSNR mean is the mean of per-image PSNRs (what most papers report); PSNR dataset is '
            f'computed from the mean squared error over all pixels (as torchmetrics does). Bold: the best value.</p>'
            f'<ul class="note">{"".join(notes)}</ul>')


def _card(e: dict[str, Any]) -> str:
    """One example: its three thumbnails and a caption (a clip's names its worst frame and flicker)."""
    t = e["thumbs"]
    clip = (f' · clip, worst frame {t["frame"]} of {t["frames"]}, flicker {esc(fmt(t["flicker"], 4))}'
            if "frame" in t else "")
    return (f'<div class="ex"><div class="trip"><img alt="original" src="{t["original"]}">'
            f'<img alt="reconstruction" src="{t["reconstruction"]}"><img alt="difference" src="{t["difference"]}">'
            f'</div><div class="cap" title="{esc(e["image"])}">{esc(e["metric"].upper())} {esc(fmt(e["value"], 3))}'
            f'{clip} · {esc(_tail(e["image"]))}</div></div>')


def _tail(path: str, parts: int = 2) -> str:
    p = Path(path).parts
    return "/".join(p[-parts:]) if len(p) > parts else path


def _kv(d: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td class="l"><code>{esc(k)}</code></td><td class="l">{esc(v)}</td></tr>'
                   for k, v in d.items() if v is not None and v != [])
    return f"<table>{rows}</table>"


def write_report(path: Path, summary: dict[str, Any], cols: dict[str, Columns],
                 examples: dict[str, dict[str, list[dict[str, Any]]]], fragments: dict[str, dict[str, str]]) -> Path:
    vaes = summary["vaes"]
    colors = {v["vae"]: PALETTE[i % len(PALETTE)] for i, v in enumerate(vaes)}
    prot = summary["protocol"]
    body = [f"<h1>VAE evaluation</h1><p class=\"sub\">{len(vaes)} VAE{'s' if len(vaes) != 1 else ''} on "
            f"{summary['images']} images · {esc(prot['resize_description'])} · latent {esc(prot['latent'])} · "
            f"{esc(summary['run']['finished'])}</p>",
            '<nav><a href="#table">Summary</a><a href="#hist">Histograms</a><a href="#scatter">Per image</a>'
            '<a href="#examples">Worst and best</a>' + ('<a href="#clips">Clips</a>' if any(
                ex.get("clips") for ex in examples.values()) else "") + '<a href="#protocol">Protocol</a></nav>',
            '<h2 id="table">Summary</h2>', _table(summary)]
    if summary.get("load_failures"):
        body.append("<h3>VAEs that could not be loaded</h3><ul>" + "".join(
            f"<li><b>{esc(f['source'])}</b>: {esc(f['reason'])}</li>" for f in summary["load_failures"]) + "</ul>")
    legend = '<p class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{esc(n)}</span>' for n, c in colors.items()) + "</p>"
    charts = []
    for metric, label, _ in CHART_METRICS:
        series = [(v["vae"], colors[v["vae"]], cols[v["source"]].array(metric)) for v in vaes if v["source"] in cols]
        svg = histogram_svg(series, label)
        if svg:
            charts.append(f'<div class="chart"><h3>{esc(label)}</h3>{svg}</div>')
    body.append('<h2 id="hist">Histograms</h2>' + legend + '<div class="charts">' + "".join(charts) + "</div>"
                if charts else '<h2 id="hist">Histograms</h2><p class="note">No per-image values.</p>')
    scatters = []
    if len(vaes) >= 2:
        base = vaes[0]
        ca = cols.get(base["source"])
        metric = "psnr" if ca is not None and np.isfinite(ca.array("psnr")).any() else "ssim"
        for other in vaes[1:4]:
            cb = cols.get(other["source"])
            if ca is None or cb is None:
                continue
            ia = dict(zip(ca.images, ca.array(metric).tolist(), strict=True))
            ib = dict(zip(cb.images, cb.array(metric).tolist(), strict=True))
            common = [k for k in ia if k in ib]
            svg = scatter_svg(base["vae"], other["vae"], np.array([ia[k] for k in common]),
                              np.array([ib[k] for k in common]), metric.upper(), colors[other["vae"]])
            if svg:
                scatters.append(f'<div class="chart"><h3>{esc(other["vae"])} against {esc(base["vae"])}</h3>{svg}'
                                f'<p class="note">One dot per image; above the dashed line {esc(other["vae"])} '
                                f'does better.</p></div>')
    body.append('<h2 id="scatter">Per image</h2>' + ('<div class="charts">' + "".join(scatters) + "</div>" if scatters
                else '<p class="note">With two or more VAEs, each image is a dot: one VAE against another.</p>'))
    body.append('<h2 id="examples">Worst and best images</h2><p class="note">original | reconstruction | '
                'difference (mean absolute error per pixel, 0 to 0.25)</p>')
    sections = [(v, which) for v in vaes for which in ("worst", "best")]
    if any(ex.get("clips") for ex in examples.values()):
        sections += [(None, "clips")] + [(v, "clips") for v in vaes]
    for v, which in sections:
        if v is None:
            body.append('<h2 id="clips">Clips</h2><p class="note">The worst clips by their mean over frames, each '
                        'shown by its worst frame (original | reconstruction | difference of that frame); flicker: '
                        'the mean change between frames that the reconstruction adds or removes</p>')
            continue
        shown = examples.get(v["vae"], {}).get(which, [])
        if shown:
            title = f"the worst {len(shown)} clips" if which == "clips" else f"the {which} {len(shown)}"
            body.append(f'<h3>{esc(v["vae"])}: {title}</h3><div class="examples">{"".join(map(_card, shown))}</div>')
    # each fragment carries its own title ("Spectrum", "Scaling factor"); the accumulator's name is a key
    frag_html = [f'<div class="vae-analyses"><h3><i style="background:{colors.get(name, PALETTE[0])}"></i>{esc(name)}'
                 f'</h3>{"".join(frags.values())}</div>' for name, frags in fragments.items() if frags]
    if frag_html:
        body.append('<h2 id="analyses">Analyses</h2>' + "".join(frag_html))
    body.append('<h2 id="protocol">Protocol</h2>' + _kv(prot))
    if summary.get("unreadable"):
        body.append(f"<h3>Unreadable images ({len(summary['unreadable'])}, skipped)</h3><ul>" + "".join(
            f"<li><code>{esc(u['image'])}</code>: {esc(u['reason'])}</li>" for u in summary["unreadable"][:200]) + "</ul>")
    body.append("<h3>Versions</h3>" + _kv(summary["versions"]) + "<h3>Hardware</h3>" + _kv(summary["hardware"]))
    template = Template(resources.files("vaestudio.resources").joinpath("evaluate/report.html").read_text("utf-8"))
    page = template.safe_substitute(title=esc(f"VAE evaluation: {', '.join(v['vae'] for v in vaes)}"),
                                    body="\n".join(body))
    write_atomic(path, page)
    return Path(path)
