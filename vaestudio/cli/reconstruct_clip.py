"""The clip half of ``vaestudio reconstruct``: a video clip in, ``<name>_recon.mp4``, ``<name>_diff.mp4``
and ``<name>_frames.csv`` out, and one result record (a JSON line under ``--json``)."""

from __future__ import annotations

import sys
from pathlib import Path


def reconstruct_clip_file(vae, path: Path, args, noise, out_dir: Path, stems: set[str]) -> dict:
    """Read, reconstruct and write one clip; returns its record. Raises on a bad clip (``VideoError``,
    exit code 3) or a failed write."""
    from vaestudio.cli.common import unique_stem
    from vaestudio.core.clip_pipeline import reconstruct_clip
    from vaestudio.core.device import dtype_name
    from vaestudio.core.files import write_atomic
    from vaestudio.core.metrics import json_float
    from vaestudio.core.video import read_clip, write_video

    clip = read_clip(path, start=args.start, frames=args.frames, size=args.size)
    rec = reconstruct_clip(vae, clip, noise=noise, tile=args.tile)
    stem = unique_stem(clip.name, stems)
    recon_path, diff_path = out_dir / f"{stem}_recon.mp4", out_dir / f"{stem}_diff.mp4"
    csv_path = out_dir / f"{stem}_frames.csv"
    codec = write_video(recon_path, rec.decoded.frames, clip.fps)
    write_video(diff_path, rec.diff_frames(), clip.fps)
    m = rec.metrics
    rows = ["frame,psnr,ssim,mae"] + [
        f"{i},{_num(p)},{s:.6f},{a:.6f}" for i, (p, s, a) in enumerate(zip(m.psnr, m.ssim, m.mae, strict=True))
    ]
    write_atomic(csv_path, "\n".join(rows) + "\n")
    notes = rec.notes + (["--sample is for images: a clip's latent is the encoder's mean"] if args.sample else [])
    for note in notes:
        print(f"note: {path}: {note}", file=sys.stderr)
    enc = rec.encoded
    record = {
        "clip": str(path),
        "frames": len(rec.decoded.frames),
        "fps": round(clip.fps, 6),
        "width": enc.width,
        "height": enc.height,
        "latent_shape": list(enc.raw.shape),  # [C, T', H', W'], as images give the raw latent's
        "psnr": json_float(m.psnr_mean),
        "psnr_min_frame": m.psnr_min_frame,
        "psnr_min": json_float(min(m.psnr)),
        "ssim": json_float(float(sum(m.ssim) / len(m.ssim))),
        "mae": json_float(float(sum(m.mae) / len(m.mae))),
        "flicker": json_float(m.flicker),
        "codec": codec,
        "encode_s": round(enc.seconds, 4),
        "decode_s": round(rec.decoded.seconds, 4),
        "device": str(vae.device),
        "dtype": dtype_name(vae.dtype),
        "dtype_reason": vae.dtype_reason,
        "architecture": vae.info.architecture,
        "kind": vae.info.kind,
        "family": vae.info.family,
        "family_guessed": vae.info.family_guessed,
        "tiled": enc.tiled or rec.decoded.tiled,
        "chunks": [list(c) for c in enc.chunks],
        "notes": notes,
        "output": str(recon_path),
        "diff": str(diff_path),
        "csv": str(csv_path),
    }
    if rec.noise is not None:
        record.update(noise_mode=rec.noise.mode, noise_value=rec.noise.value, seed=args.seed,
                      snr=json_float(rec.noise.snr), snr_db=json_float(rec.noise.snr_db))
    return record


def _num(x: float) -> str:
    """A PSNR for the CSV: 'inf' for an exact frame."""
    return f"{x:.6f}" if x != float("inf") else "inf"


def clip_line(record: dict) -> str:
    """The human-readable line for one clip."""
    psnr = "inf" if record["psnr"] is None else f"{record['psnr']:.2f}"
    extra = f"  SNR {record['snr_db']} dB" if "snr_db" in record else ""
    return (f"{record['clip']}: {record['frames']} frames {record['width']}x{record['height']} at "
            f"{record['fps']:g} fps latent {tuple(record['latent_shape'])}  PSNR {psnr} dB (worst frame "
            f"{record['psnr_min_frame']})  flicker {record['flicker']:.5f}  encode {record['encode_s']:.2f}s "
            f"decode {record['decode_s']:.2f}s{extra}  -> {record['output']} ({record['codec']})")
