"""``vaestudio gui [IMAGES or CLIPS...] [--vae SOURCE]`` (also what ``vaestudio`` alone does)."""

from __future__ import annotations

import os
import sys

from vaestudio.cli.common import EXIT_OTHER, err

ORDER = 0


def add_parser(sub) -> None:
    g = sub.add_parser("gui", help="open the window (the default)")
    g.add_argument("images", nargs="*", help="images or video clips to open")
    g.add_argument("--vae", default=None, help="VAE source to load")
    g.set_defaults(handler=run)


def no_display() -> bool:
    """True on Linux when Qt would look for an X or Wayland display that is not there (and abort with
    its own message when the QApplication is made): no DISPLAY, no WAYLAND_DISPLAY, and no platform
    chosen other than xcb (offscreen, vnc, eglfs... need no display)."""
    if not sys.platform.startswith("linux"):
        return False
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    return (platform in ("", "xcb") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY"))


def run(args) -> int:
    if no_display():
        err(None, "no display found (DISPLAY and WAYLAND_DISPLAY are not set), so the window cannot open; "
                  "the command line works without one: see vaestudio --help")
        return EXIT_OTHER
    from vaestudio.ui.app import run_gui

    return run_gui(args.images, args.vae)
