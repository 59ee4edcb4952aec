"""Tile seams, described for the CLI and the window (the computation: ``seams.py``)."""

from __future__ import annotations

from vaestudio.core.analyses.describe import (
    Analysis,
    Chart,
    Column,
    Figure,
    Labelled,
    Option,
    Picture,
    Series,
)

DEFAULT_TILES = (64, 128)
DEFAULT_OVERLAPS = (0, 16, 32)


def check_seam_settings(values: dict) -> None:
    """At least one overlap must be smaller than one tile, or there is nothing to measure."""
    tiles, overlaps = values["tiles"], values["overlaps"]
    if not any(o < t for t in tiles for o in overlaps):
        raise ValueError("every overlap is as large as every tile: an overlap must be smaller than the tile")


def rows(d: dict) -> list[dict]:
    return [{**s, "band_width": d["band_width"]} for s in d["seams"]]


def summary(d: dict) -> str:
    return "seam score " + ", ".join(
        f"tile {s['tile']}/overlap {s['overlap']}: {'n/a' if s['seam_score'] is None else format(s['seam_score'], '.3f')}"
        for s in d["seams"])


def figure(results: Labelled) -> Figure:
    # the settings differ between VAEs (tiles are rounded to each VAE's factor): one axis for all
    keys = sorted({(s["tile"], s["overlap"]) for _, d in results for s in d["seams"]})
    where = {k: i for i, k in enumerate(keys)}
    series = []
    for i, (_, d) in enumerate(results):
        xs = [where[(s["tile"], s["overlap"])] for s in d["seams"]]
        series.append(Series(xs, [s["seam_score"] for s in d["seams"]], i, markers=True))
        series.append(Series(xs, [s["untiled_score"] for s in d["seams"]], i, dash=5, width=1))
    band = results[0][1]["band_width"] if results else 8
    return Figure("Tile seams: error along tile boundaries / error elsewhere (1 = no seams)", [
        Chart("seam score by tile size / overlap (1 = no seams)", "tile / overlap (pixels)", "seam score", series,
              hlines=(1.0,), include=(1.0,), xlim=(-0.5, len(keys) - 0.5),
              xticks=[(i, f"{t}/{o}") for i, (t, o) in enumerate(keys)],
              note=f"bands: {2 * band} px along each boundary; dashed: the untiled decode (the control)"),
    ], columns=1)


def pictures(results, image: str) -> list[Picture]:
    """Each VAE's difference maps with the tile boundaries (also written as ``..._seams_maps.png``)."""
    from vaestudio.core.analyses.seam_maps import seam_maps

    name = f"{image}, " if image else ""
    return [Picture(f"{label}: |tiled - untiled|", seam_maps(r, f"{name}{label}: tiled minus untiled decode"),
                    key="maps", file="seams_maps") for label, r in results]


ANALYSIS = Analysis(
    name="seams", title="Tile seams",
    question="Decode in tiles and whole: where tiles meet, is the error larger? A seam score per tile size and "
             "overlap, to pick settings that hide seams.",
    run="vaestudio.core.analyses.seams:run_seams",
    options=(Option("tiles", "sizes", list(DEFAULT_TILES), "tile sizes in pixels (default 64,128)", "Tile sizes",
                    metavar="T,T", unit="px"),
             Option("overlaps", "sizes", list(DEFAULT_OVERLAPS), "tile overlaps in pixels (default 0,16,32)",
                    "Overlaps", metavar="O,O", unit="px")),
    columns=(Column("tile", "tile", "d"), Column("overlap", "overlap", "d"), Column("seam_score", "seam score", ".3f"),
             Column("untiled_score", "untiled (control)", ".3f"), Column("band_error", "error in bands"),
             Column("other_error", "error elsewhere"), Column("max_difference", "max difference"),
             Column("band_width", "band (px)", "d")),
    rows=rows, summary=summary, figure=figure, pictures=pictures, check=check_seam_settings,
)
