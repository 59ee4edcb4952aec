"""``vaestudio reconstruct``: encode and decode images and clips, write reconstructions and difference maps
(a clip's half is in ``reconstruct_clip.py``)."""

from __future__ import annotations

import json
import math
import sys

from vaestudio.cli.common import (
    EXIT_OK,
    EXIT_OTHER,
    add_decoder_option,
    add_size_option,
    add_vae_options,
    check_size,
    load,
    metric_fields,
    output_folder,
    report,
    unique_stem,
    usage,
)

ORDER = 10


def add_parser(sub) -> None:
    r = sub.add_parser("reconstruct", help="encode and decode images and clips, write reconstructions and "
                                           "difference maps")
    r.add_argument("images", nargs="+", metavar="IMAGE",
                   help="images, folders of images, or video clips (.mp4 .webm .mov .mkv .avi, animated "
                        ".gif .webp .png)")
    r.add_argument("--vae", required=True, metavar="SOURCE",
                   help="weight file, diffusers folder, or Hugging Face id (org/name[/subfolder])")
    r.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
    add_size_option(r)
    r.add_argument("--frames", type=int, default=None, metavar="N", help="a clip: at most N frames (trimmed "
                   "to the count the VAE takes: 1 + 4k for Wan)")
    r.add_argument("--start", type=float, default=0.0, metavar="S", help="a clip: start S seconds in")
    grp = r.add_mutually_exclusive_group()
    grp.add_argument("--noise", type=float, default=None, metavar="S", help="add noise of strength S to the latent")
    grp.add_argument("--timestep", type=float, default=None, metavar="T", help="noise the latent to diffusion timestep T")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--sample", action="store_true", help="sample the latent instead of taking its mean")
    r.add_argument("--json", action="store_true", help="one JSON object per image per line")
    add_vae_options(r)
    add_decoder_option(r)
    r.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.cli.reconstruct_clip import clip_line, reconstruct_clip_file
    from vaestudio.core.device import dtype_name
    from vaestudio.core.filetypes import is_clip
    from vaestudio.core.images import list_images, load_image, save_png
    from vaestudio.core.metrics import json_float
    from vaestudio.core.noise import NoiseSpec
    from vaestudio.core.pipeline import reconstruct

    check_size(args)
    if args.frames is not None and args.frames < 1:
        return usage("--frames must be at least 1")
    if not (math.isfinite(args.start) and args.start >= 0):
        return usage("--start must be a number of seconds >= 0")
    paths = list_images(args.images)  # an empty folder is a usage error, before the VAE is loaded
    try:
        vae = load(args, args.vae)
    except Exception as exc:  # noqa: BLE001
        return report(exc, args.debug, args.vae)
    if args.timestep is not None and not 0 <= args.timestep <= vae.family.max_timestep:
        return usage(f"--timestep must be between 0 and {vae.family.max_timestep} for {vae.family.name}")
    if args.noise is not None and (args.noise < 0 or not math.isfinite(args.noise)):
        return usage("--noise must be a finite number >= 0")
    noise = None
    if args.noise is not None:
        noise = NoiseSpec("strength", args.noise, args.seed)
    elif args.timestep is not None:
        noise = NoiseSpec("timestep", args.timestep, args.seed)
    out_dir = output_folder(args.out)
    if out_dir is None:
        return EXIT_OTHER
    code = EXIT_OK
    stems: set[str] = set()
    for path in paths:
        if is_clip(path):
            try:
                record = reconstruct_clip_file(vae, path, args, noise, out_dir, stems)
            except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
                code = max(code, report(exc, args.debug, path))
                continue
            print(json.dumps(record) if args.json else clip_line(record), flush=True)
            continue
        try:
            image = load_image(path, size=args.size)
            rec = reconstruct(vae, image, noise=noise, seed=args.seed, sample=args.sample, tile=args.tile)
            stem = unique_stem(image.name, stems)
            recon_path = save_png(rec.decoded, out_dir / f"{stem}_recon.png")
            diff_path = save_png(rec.diff_rgb, out_dir / f"{stem}_diff.png")
        except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
            code = max(code, report(exc, args.debug, path))
            continue
        for note in rec.notes:
            print(f"note: {path}: {note}", file=sys.stderr)
        record = {
            "image": str(path),
            "width": image.width,
            "height": image.height,
            "latent_shape": list(rec.encoded.raw.shape),
            **metric_fields(rec.metrics),
            "encode_s": round(rec.encode_s, 4),
            "decode_s": round(rec.decode_s, 4),
            "device": str(vae.device),
            "dtype": dtype_name(vae.dtype),
            "dtype_reason": vae.dtype_reason,
            "architecture": vae.info.architecture,
            "family": vae.info.family,
            "family_guessed": vae.info.family_guessed,
            "tiled": rec.encoded.tiled,
            "output": str(recon_path),
            "diff": str(diff_path),
        }
        if rec.noise is not None:
            record.update(noise_mode=rec.noise.mode, noise_value=rec.noise.value, seed=args.seed,
                          snr=json_float(rec.noise.snr), snr_db=json_float(rec.noise.snr_db))
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            m = rec.metrics
            extra = f"  SNR {record['snr_db']} dB" if rec.noise is not None else ""
            print(f"{path}: {image.width}x{image.height} latent {tuple(record['latent_shape'])}  "
                  f"PSNR {m.psnr:.2f} dB  SSIM {m.ssim:.4f}  encode {rec.encode_s:.2f}s decode {rec.decode_s:.2f}s"
                  f"{extra}  -> {recon_path}", flush=True)
    return code
