"""Round-trip drift, described for the CLI and the window (the computation: ``drift.py``)."""

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

DEFAULT_ROUNDS = 10
DASHES = (0, 7, 2)  # R solid, G dashed, B dotted


def _f(v, spec: str, none: str = "inf") -> str:
    return none if v is None else format(v, spec)


def rows(d: dict) -> list[dict]:
    return [{"round": r["round"], "psnr": r["psnr"], "ssim": r["ssim"], "color_shift_r": r["color_shift"][0],
             "color_shift_g": r["color_shift"][1], "color_shift_b": r["color_shift"][2]} for r in d["rounds"]]


def summary(d: dict) -> str:
    r = d["rounds"][-1]
    cs = ", ".join(f"{v:+.4f}" for v in r["color_shift"])
    return f"after round {r['round']}: PSNR {_f(r['psnr'], '.2f')} dB, SSIM {_f(r['ssim'], '.4f')}, colour shift ({cs})"


def figure(results: Labelled) -> Figure:
    k_max = max((len(d["rounds"]) for _, d in results), default=1)
    ticks = [(k, str(k)) for k in range(1, k_max + 1) if k_max <= 12 or k % max(1, k_max // 10) == 0]
    common = {"xlabel": "round", "xlim": (0.5, k_max + 0.5), "xticks": ticks, "integer_x": True}

    def per_vae(key: str) -> list[Series]:
        return [Series([r["round"] for r in d["rounds"]], [r[key] for r in d["rounds"]], i, markers=True)
                for i, (_, d) in enumerate(results)]

    psnrs = [r["psnr"] for _, d in results for r in d["rounds"]]
    shift = [Series([r["round"] for r in d["rounds"]], [r["color_shift"][ch] for r in d["rounds"]], i, dash=dash)
             for i, (_, d) in enumerate(results) for ch, dash in enumerate(DASHES)]
    return Figure("Round-trip drift: encode + decode repeated", [
        Chart("PSNR against the original", ylabel="PSNR (dB)", series=per_vae("psnr"),
              note="identical to the original (PSNR infinite)" if psnrs and all(v is None for v in psnrs) else "",
              **common),
        Chart("SSIM against the original", ylabel="SSIM", series=per_vae("ssim"), include=(1.0,), **common),
        Chart("colour shift (R solid, G dashed, B dotted)", ylabel="mean shift (0..1)", series=shift,
              hlines=(0.0,), include=(0.0,), **common),
    ])


def pictures(results, image: str) -> list[Picture]:
    """The original, then each VAE's picture after the last round (also written as ``..._drift_last.png``)."""
    if not results:
        return []
    return [Picture("original", results[0][1].original)] + [
        Picture(f"{label}: round {len(r.rounds)}", r.last, key="last_round", file="drift_last") for label, r in results]


ANALYSIS = Analysis(
    name="drift", title="Round-trip drift",
    question="Encode and decode again and again: do colours drift and detail fade, as after repeated inpainting "
             "passes? PSNR, SSIM and colour shift after each round.",
    run="vaestudio.core.analyses.drift:run_drift",
    options=(Option("rounds", "int", DEFAULT_ROUNDS, "encode/decode rounds (default 10)", "Rounds", metavar="K", minimum=1,
                    maximum=100),),
    columns=(Column("round", "round", "d"), Column("psnr", "PSNR (dB)", ".2f", missing="inf"),
             Column("ssim", "SSIM", ".4f"), Column("color_shift_r", "shift R", "+.4f"),
             Column("color_shift_g", "shift G", "+.4f"), Column("color_shift_b", "shift B", "+.4f")),
    rows=rows, summary=summary, figure=figure, pictures=pictures,
)
