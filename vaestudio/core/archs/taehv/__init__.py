"""The tiny video autoencoders (madebyollin's TAEHV family): taew2_1 (Wan 2.1, Qwen-Image), taew2_2 and
taew2_2_super (Wan 2.2 TI2V-5B), taehv (HunyuanVideo), taeltx_2 (LTX-2) and taeltx2_3 (LTX-2.3).

A few million parameters; frames in [0, 1]; latents already in the diffusion model's latent space
(scale 1, shift 0), so a tiny decoder previews another VAE's video latents at full size. Written here
(``networks``) with the author's module indices (``taehv.py``), so the published files load as they
are; ``layouts`` reads them and tells the network from the shapes: the pixel patch (taew2_2: 2,
taeltx: 4), the widths, the time strides (4x for Wan and HunyuanVideo, 8x for LTX) and the decoder
variant.

In time, as the author's code does: a clip is padded at its end (the last frame repeated) to a multiple
of the time factor ``t``; each latent frame decodes to ``t`` frames, and the first ``t - 1`` decoded
frames are dropped, so 1 + k t frames come back as 1 + k t frames (Wan's rule). An image is a one-frame
clip. Clips run in chunks of whole latent frames, each memory block carrying its last input frame into
the next chunk, which makes chunked equal to whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from vaestudio.core.archs._common import dtype_of, fitting_families, misfit
from vaestudio.core.archs.taehv.layouts import (
    NOT_YET,
    TINY_VIDEO_NAMES,
    detect,
    find_tiny_video_decoder,
    split_halves,
    tiny_video_name,
)
from vaestudio.core.archs.taehv.networks import (
    Spec,
    TinyVideoModel,
    make_decoder,
    make_encoder,
    run_frames,
    shuffle,
    unshuffle,
)
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, Family, guess_family
from vaestudio.core.registry import Architecture, PreparedVae
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile, check_finite

__all__ = ["ARCHITECTURE", "TINY_VIDEO_NAMES", "TinyVideoAutoencoder", "make_decoder", "make_encoder"]

#: pixels (frames x height x width) computed together in one chunk of a clip
CHUNK_PIXELS = 2 * 1024 * 1024


class TinyVideoAutoencoder(TorchAutoencoder):
    """A tiny video autoencoder (either half may be absent) with the shared round-trip machinery."""

    architecture = "taehv"
    previews_itself = True
    input_range = (0.0, 1.0)
    has_logvar = False
    cancel_blocks = ("MemBlock", "SuperMemBlock")
    auto_tile_pixels = 16 * 1024 * 1024  # as TAESD: tiny activations, and tiles cost quality

    def __init__(self, model: TinyVideoModel, info: VaeInfo, family: Family, spec: Spec, **kwargs) -> None:
        super().__init__(model, info, family, **kwargs)
        self.spec = spec

    @property
    def _time(self) -> int:
        return self.info.temporal_downscale

    # -- images: one-frame clips ------------------------------------------------------------
    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_frames_tensor(x[:, None], None)[0][:, 0]

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode_frames_tensor(z[:, None], None, first=True)[0][:, 0]

    # -- the networks on (N, T, C, H, W) frames, with the memory of the chunk before -----------
    def _encode_frames_tensor(self, x: torch.Tensor, memory: list | None) -> tuple[torch.Tensor, list]:
        """Frames (N, T, 3, H, W) in [0, 1] to latents (N, T / t, C, h, w); T is padded at its end to a
        multiple of the time factor with the last frame, as the author's ``encode_video`` does."""
        if x.shape[1] % self._time:
            pad = self._time - x.shape[1] % self._time
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1, -1, -1)], 1)
        return run_frames(self.model.encoder, unshuffle(x, self.spec.patch), memory)

    def _decode_frames_tensor(self, z: torch.Tensor, memory: list | None, *, first: bool) -> tuple[torch.Tensor, list]:
        """Latents (N, T', C, h, w) to frames (N, T' t, 3, H, W) in [0, 1], less the first t - 1 of the
        clip (when ``first``: this is its first chunk)."""
        out, memory = run_frames(self.model.decoder, z, memory)
        out = shuffle(out, self.spec.patch).clamp(0, 1)
        return (out[:, self._time - 1:] if first else out), memory

    # -- clips (vaestudio.core.clips) ---------------------------------------------------------
    def _latents_per_chunk(self, height: int, width: int) -> int:
        return max(1, CHUNK_PIXELS // max(1, self._time * height * width))

    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        step = self._time * self._latents_per_chunk(height, width)
        return [(s, min(s + step, frames)) for s in range(0, frames, step)]

    def _iter_encode_clip_tensor(self, x: torch.Tensor) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
        frames = x.movedim(1, 2)  # (1, T, 3, H, W)
        memory = None
        for s, e in self._clip_chunks(frames.shape[1], *frames.shape[-2:]):
            z, memory = self._encode_frames_tensor(frames[:, s:e], memory)
            yield (s, e), z.movedim(1, 2)

    def _encode_clip_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([z for _, z in self._iter_encode_clip_tensor(x)], dim=2)

    def _iter_decode_clip_tensor(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        lat = z.movedim(1, 2)  # (1, T', C, h, w)
        f = self.downscale
        step = self._latents_per_chunk(lat.shape[-2] * f, lat.shape[-1] * f)
        memory = None
        for s in range(0, lat.shape[1], step):
            out, memory = self._decode_frames_tensor(lat[:, s:s + step], memory, first=s == 0)
            yield out.movedim(1, 2)


class TinyVideoArchitecture(Architecture):
    name = "taehv"
    label = "tiny video autoencoder (TAEHV family)"
    order = 12
    families = ("wan", "qwen-image", "wan22", "hunyuan-video", "ltx2", "ltx2.3")
    sources = (
        ("file", "taew2_1, taew2_2, taew2_2_super, taehv, taeltx_2, taeltx2_3 .pth or .safetensors (madebyollin/taehv; "
                 "ComfyUI models/vae_approx), encoder.N / decoder.N keys; a decoder alone loads too"),
    )

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return split_halves(wf.tensors) is not None

    def find_preview_decoder(self, location: Path, family: str) -> Path | None:
        return find_tiny_video_decoder(location, family)

    def prepare_file(self, path: Path, wf: WeightFile, label: str) -> PreparedVae:
        enc, dec, ignored = split_halves(wf.tensors)
        tiny = tiny_video_name(path.name)
        if tiny in NOT_YET:
            raise VaeLoadError(f"{tiny} is the tiny autoencoder of {NOT_YET[tiny]}, which vaestudio does not read "
                               f"yet", label)
        tensors = {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}}
        check_finite(tensors, label)
        spec = detect(enc, dec, label)
        channels, downscale = spec.latent_channels, 8 * spec.patch
        fam, guessed, reason = self._decide(channels, downscale, tiny, path.name, wf.metadata, label)
        notes = list(wf.notes)
        if not enc:
            notes.append("only the decoder: this file has no encoder")
        info = VaeInfo(
            source=label, format=wf.format, key_layout="taehv", architecture=self.name, family=fam.name,
            family_guessed=guessed, family_reason=reason, latent_channels=channels, downscale=downscale,
            scaling_factor=1.0, shift_factor=0.0, parameters=sum(t.numel() for t in tensors.values()),
            dtype=dtype_of(tensors), halves=[h for h, d in (("encoder", enc), ("decoder", dec)) if d],
            ignored_keys=ignored[:6], notes=notes, force_upcast=False, kind="video",
            temporal_downscale=spec.time_down if enc else spec.time_up,
        )
        return PreparedVae(self.name, tensors, spec.to_dict(), info, fam,
                           extra={"missing_hint": " (a tiny video decoder file alone)" if not enc else ""})

    def _decide(self, channels: int, downscale: int, tiny: str | None, name: str, metadata: dict,
                label: str) -> tuple[Family, bool, str]:
        candidates = fitting_families(self.families, channels, downscale)
        if not candidates:
            raise VaeLoadError(f"no video family vaestudio knows has {channels} latent channels at 1/{downscale} "
                               f"size (it reads {', '.join(TINY_VIDEO_NAMES)})", label)
        named = FAMILIES.get(TINY_VIDEO_NAMES.get(tiny or "", ""))
        if len(candidates) == 1:
            return candidates[0], False, f"the only family with {channels} latent channels at 1/{downscale} size"
        if named in candidates:
            return named, False, f"the file name says {tiny}"
        g = guess_family(candidates, metadata=metadata, name=name, default=candidates[0])
        return g.family, g.guessed, g.reason

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> TinyVideoAutoencoder:
        info, spec = prepared.info, Spec.from_dict(prepared.config)
        parts = {}
        for half, make in (("encoder", make_encoder), ("decoder", make_decoder)):
            sd = {k[len(half) + 1:]: v.float() for k, v in prepared.tensors.items() if k.startswith(half + ".")}
            if not sd:
                parts[half] = None
                continue
            net = make(spec)
            if (why := misfit(net, sd)) is not None:
                raise VaeLoadError(f"the tiny video {half}'s weights do not fit its layout ({why})", info.source)
            net.load_state_dict(sd, strict=True)
            parts[half] = net
        return TinyVideoAutoencoder(TinyVideoModel(parts["encoder"], parts["decoder"]), info, prepared.family, spec,
                                    device=device, dtype=dtype)

    def family_choices(self, info: VaeInfo) -> list[Family]:
        return fitting_families(self.families, info.latent_channels, info.downscale)

    def use_family(self, info: VaeInfo, family: Family) -> None:
        super().use_family(info, family)
        info.scaling_factor, info.shift_factor = 1.0, 0.0  # tiny latents are already in model space


ARCHITECTURE = TinyVideoArchitecture()
