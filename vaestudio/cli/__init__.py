"""The ``vaestudio`` command line. With no arguments it opens the window.

Each command is one module in this package with ``add_parser(sub)`` (which sets the handler) and
``ORDER`` (its place in the help); they are found by listing the package. torch and diffusers are
imported inside the handlers, so ``vaestudio`` opens its window fast.

Exit codes: 0 success; 2 usage; 3 an image could not be read; 4 a VAE source could not be loaded;
1 anything else. Errors are one line on stderr (``error: <path>: <reason>``), with a traceback
only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vaestudio.cli.common import err, report


def build_parser() -> argparse.ArgumentParser:
    from vaestudio import __version__

    parser = argparse.ArgumentParser(prog="vaestudio", description="See what a VAE does to your images.")
    parser.add_argument("--version", action="version", version=f"vaestudio {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            modules.append(module)
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 50)):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*argv, "gui"])
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        err(None, "interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, right exit code
        return report(exc, args.debug)
