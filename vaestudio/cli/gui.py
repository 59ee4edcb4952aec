"""``vaestudio gui [IMAGES...] [--vae SOURCE]`` (also what ``vaestudio`` alone does)."""

from __future__ import annotations

ORDER = 0


def add_parser(sub) -> None:
    g = sub.add_parser("gui", help="open the window (the default)")
    g.add_argument("images", nargs="*", help="images to open")
    g.add_argument("--vae", default=None, help="VAE source to load")
    g.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.ui.app import run_gui

    return run_gui(args.images, args.vae)
