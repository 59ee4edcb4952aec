"""Noise robustness, described for the CLI and the window (the computation: ``robustness.py``)."""

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

DEFAULT_STEPS = 10


def rows(d: dict) -> list[dict]:
    return [{"mode": d["mode"], **p} for p in d["points"]]


def summary(d: dict) -> str:
    return "PSNR vs clean " + ", ".join(
        f"{d['mode']} {p['t']:g}: {'inf' if p['psnr'] is None else format(p['psnr'], '.1f')} dB" for p in d["points"])


def figure(results: Labelled) -> Figure:
    mode = results[0][1]["mode"] if results else "timestep"
    xlabel = "timestep (noise over the family's schedule)" if mode == "timestep" else "noise strength"

    def per_vae(key: str) -> list[Series]:
        return [Series([p["t"] for p in d["points"]], [p[key] for p in d["points"]], i, markers=True)
                for i, (_, d) in enumerate(results)]

    return Figure("Noise robustness: decoding noised latents", [
        Chart("PSNR against the clean reconstruction", xlabel, "PSNR (dB)", per_vae("psnr")),
        Chart("SSIM against the clean reconstruction", xlabel, "SSIM", per_vae("ssim"), include=(1.0,)),
    ])


def pictures(results, image: str) -> list[Picture]:
    return [Picture(f"{label}: clean reconstruction", r.clean) for label, r in results]


ANALYSIS = Analysis(
    name="noise", title="Noise robustness",
    question="How fast does the picture degrade as latent noise grows along the family's schedule (or as a "
             "strength)? PSNR and SSIM against the clean reconstruction.",
    run="vaestudio.core.analyses.robustness:run_noise",
    options=(Option("steps", "int", DEFAULT_STEPS, "noise amounts, from none (default 10)", "Points", metavar="N", minimum=2,
                    maximum=50),
             Option("mode", "choice", "timestep", "timesteps over the family's schedule (default), or strength "
                    "z + s * eps", "Noise as", choices=("timestep", "strength")),
             Option("max_strength", "float", 1.0, "the largest strength with --mode strength (default 1)",
                    "Largest strength", metavar="S", positive=True, maximum=100.0),
             Option("seed", "int", 0, "the noise's seed (default 0)", "Seed", maximum=2**31 - 1)),
    columns=(Column("mode", "mode"), Column("t", "t", "g"), Column("psnr", "PSNR (dB)", ".2f", missing="inf"),
             Column("ssim", "SSIM", ".4f"), Column("snr_db", "SNR (dB)", ".2f", missing="inf")),
    rows=rows, summary=summary, figure=figure, pictures=pictures,
)
