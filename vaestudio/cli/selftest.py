"""``vaestudio self-test``: check that this install works (window, VAE, reconstruction, training)."""

from __future__ import annotations

ORDER = 90


def add_parser(sub) -> None:
    s = sub.add_parser("self-test", help="check that this install works (window, VAE, reconstruction, training)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.selftest import run_self_test

    return run_self_test(json_out=args.json)
