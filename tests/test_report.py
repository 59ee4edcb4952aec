"""report.html and the CLI's summary as a reader sees them: headings, worst and best, missing metrics."""

from __future__ import annotations

import re

import pytest
import torch
from helpers.data import photo

from vaestudio.cli import main
from vaestudio.core.evaluate.summary import N_EXAMPLES, Columns, pick_examples


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 16, 30])
@pytest.mark.parametrize("metric", ["psnr", "mae"])
def test_worst_and_best_never_share_an_image(n, metric):
    cols = Columns(images=[f"img{i:02d}" for i in range(n)])
    cols.values[metric] = [float((i * 7) % n) for i in range(n)]  # a shuffled order, so sorting matters
    picks = pick_examples(cols)
    worst, best = ([image for image, _, _ in picks[k]] for k in ("worst", "best"))
    assert not set(worst) & set(best)
    assert len(worst) == min(N_EXAMPLES, n) and len(best) == min(N_EXAMPLES, n - len(worst))
    value = dict(zip(cols.images, cols.values[metric], strict=True))
    bad = (lambda v: -v) if metric == "psnr" else (lambda v: v)  # higher PSNR is better, lower MAE is
    ranked = sorted(cols.images, key=lambda i: (-bad(value[i]), i))
    assert sorted(worst, key=ranked.index) == ranked[: len(worst)]
    if best:
        assert set(best) == set(ranked[::-1][: len(best)]) or min(bad(value[i]) for i in worst) >= max(
            bad(value[i]) for i in best)


def test_a_small_evaluation_reads_well(tmp_path, vae_dir, capsys, monkeypatch):
    from vaestudio.core import lpips

    monkeypatch.setattr(lpips, "WEIGHTS", tmp_path / "absent.safetensors")  # an install without LPIPS's weights
    (tmp_path / "data").mkdir()
    images = [photo(tmp_path / "data", f"p{i}.png", size=(24 + 4 * i, 40), seed=i) for i in range(10)]
    out = tmp_path / "out"
    assert main(["evaluate", *map(str, images), "--vae", str(vae_dir), "--out", str(out), "--size", "32",
                 "--workers", "0", "--metrics", "psnr,lpips"]) == 0
    err = capsys.readouterr().err
    # the table shows LPIPS as "-": why, once, on stderr
    assert err.count("note: LPIPS: unavailable (the LPIPS weights file is missing from this install)\n") == 1
    page = (out / "report.html").read_text()
    headings = re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", page)
    # the analyses are titled by their own fragments, not by the accumulators' internal names
    assert not [h for h in headings if re.search(r"latent_stats|: spectrum$", h)], headings
    assert "Spectrum" in headings and "Scaling factor" in headings
    shown = {}
    for which, cards in re.findall(r"<h3>[^<]*: the (worst|best) \d+</h3><div class=\"examples\">(.*?)</div></div></div>"
                                   r"(?=<h|\n)", page, re.S):
        shown[which] = re.findall(r'<div class="cap" title="([^"]+)"', cards)
    assert (len(shown["worst"]), len(shown["best"])) == (N_EXAMPLES, 10 - N_EXAMPLES)
    assert not set(shown["worst"]) & set(shown["best"])
    assert "LPIPS: unavailable (the LPIPS weights file is missing from this install)" in page


def test_each_vaes_analysis_figures_are_drawn_in_its_own_colour(tmp_path, vae_dir, ldm_file):
    """Two VAEs: the second one's spectrum and latent figures use its palette colour (the swatch beside its name),
    not the first VAE's."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from vaestudio.core.analyses.plotting import PALETTE

    (tmp_path / "data").mkdir()
    images = [photo(tmp_path / "data", f"p{i}.png", size=(32, 32), seed=i) for i in range(3)]
    out = tmp_path / "out"
    assert main(["evaluate", *map(str, images), "--vae", str(vae_dir), "--vae", str(ldm_file), "--out", str(out),
                 "--workers", "0", "--metrics", "psnr"]) == 0
    page = (out / "report.html").read_text()
    blocks = [b.split('<h2 id="protocol">')[0] for b in page.split('<div class="vae-analyses">')[1:]]
    assert len(blocks) == 2

    def colours(block: str) -> set[tuple[int, int, int]]:
        found = set()
        for data in re.findall(r'src="data:image/png;base64,([^"]+)"', block):
            px = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).reshape(-1, 3)
            found |= {tuple(int(v) for v in c) for c in np.unique(px, axis=0)}
        return found

    first, second = colours(blocks[0]), colours(blocks[1])
    assert tuple(PALETTE[0]) in first and tuple(PALETTE[1]) not in first
    assert tuple(PALETTE[1]) in second and tuple(PALETTE[0]) not in second


def test_a_scatter_of_long_vae_names_keeps_its_axis_labels_inside_and_the_full_names_as_tooltips():
    import numpy as np

    from vaestudio.core.evaluate.report import AXIS_CHARS, scatter_svg

    a, b = "stabilityai/sdxl-vae-fp16-fix/" + "a" * 60 + "/first", "madebyollin/" + "b" * 80 + "/second"
    svg = scatter_svg(a, b, np.array([1.0, 2.0]), np.array([1.5, 2.5]), "PSNR", "#1f77b4")
    labels = re.findall(r"<text[^>]*><title>([^<]*)</title>([^<]*)</text>", svg)
    assert [t for t, _ in labels] == [a, b]  # the whole names, on hover
    x_label, y_label = (shown for _, shown in labels)
    assert x_label.endswith(" (PSNR)") and len(x_label) <= AXIS_CHARS and len(y_label) <= AXIS_CHARS
    assert x_label.startswith("stabilityai/") and "first" in x_label and y_label.endswith("/second") and "…" in y_label
    short = scatter_svg("sd", "flux2", np.array([1.0]), np.array([2.0]), "PSNR", "#1f77b4")
    assert "<title>sd</title>sd (PSNR)</text>" in short and "<title>flux2</title>flux2</text>" in short
