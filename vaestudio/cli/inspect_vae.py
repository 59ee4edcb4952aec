"""``vaestudio inspect-vae``: report what VAE sources hold, without building the models."""

from __future__ import annotations

import json

from vaestudio.cli.common import EXIT_OK, add_decoder_option, family_help, reason, report

ORDER = 20


def add_parser(sub) -> None:
    i = sub.add_parser("inspect-vae", help="report what a VAE source holds")
    i.add_argument("sources", nargs="+", metavar="SOURCE")
    i.add_argument("--family", default=None, help=family_help())
    i.add_argument("--json", action="store_true", help="one JSON object per source per line")
    add_decoder_option(i)
    i.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.core.device import dtype_name, pick_device
    from vaestudio.core.registry import get_architecture
    from vaestudio.core.sources import prepare_source

    code = EXIT_OK
    device = pick_device(None)
    for source in args.sources:
        try:
            info = prepare_source(source, family=args.family, decoder=args.decoder).info
            auto = get_architecture(info.architecture).auto_dtype(info, device)
        except Exception as exc:  # noqa: BLE001
            code = max(code, report(exc, args.debug, source))
            if args.json:
                print(json.dumps({"source": source, "error": reason(exc)}), flush=True)
            continue
        if args.json:  # dtype: the weights' (as stored); auto_dtype: what --dtype auto runs them in here
            print(json.dumps({**info.to_dict(), "auto_dtype": dtype_name(auto.dtype), "dtype_reason": auto.reason}),
                  flush=True)
            continue
        guessed = " (guessed: " + info.family_reason + ")" if info.family_guessed else f" ({info.family_reason})"
        model = ""
        if info.model_latent_channels:
            model = f"\n  model space:     {info.model_latent_channels} channels at 1/{info.model_downscale}"
        if info.kind != "image":
            model += f"\n  kind:            {info.kind} (temporal_downscale {info.temporal_downscale})"
        print(f"{source}\n  architecture:    {info.architecture}\n  format:          {info.format}\n"
              f"  key layout:      {info.key_layout}\n"
              f"  family:          {info.family}{guessed}\n  latent_channels: {info.latent_channels}\n"
              f"  downscale:       {info.downscale}{model}\n"
              f"  halves:          {', '.join(info.halves)}\n"
              f"  scaling_factor:  {info.scaling_factor}\n  shift_factor:    {info.shift_factor}\n"
              f"  parameters:      {info.parameters:,}\n  dtype:           {info.dtype}\n"
              f"  auto dtype:      {dtype_name(auto.dtype)} on {device} ({auto.reason})\n"
              f"  ignored keys:    {', '.join(info.ignored_keys) or 'none'}")
        for note in info.notes:
            print(f"  note:            {note}")
    return code
