"""The original Wan VAE key layouts (as ComfyUI ships the files) and diffusers' names for them, shared by
the architectures whose weights use them (Wan 2.1 / 2.2 and Qwen-Image in ``wan``, Qwen-Image 2.1 in
``qwen_image21``).

Wan 2.1's flat layout (``encoder.downsamples.N``, ``decoder.upsamples.N``) goes through diffusers' own
``convert_wan_vae_to_diffusers``; Wan 2.2's nested one (``decoder.upsamples.0.upsamples.0``, also Qwen-Image
2.1's) has no converter in diffusers' loaders, so ``original_to_diffusers`` maps it;
``diffusers_to_original`` is its inverse. Residual blocks are ``residual.0`` (RMS norm), ``residual.2``
(conv), ``residual.3``, ``residual.6`` and ``shortcut``; the middle is ``middle.0/1/2``; the head
``head.0/2``; the quant convolutions ``conv1``/``conv2``.
"""

from __future__ import annotations

import re

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.errors import VaeLoadError

_RES = (("residual.0.gamma", "norm1.gamma"), ("residual.2.", "conv1."), ("residual.3.gamma", "norm2.gamma"),
        ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut."))


def _res_to_diffusers(rest: str) -> str:
    for old, new in _RES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def _res_to_original(rest: str) -> str:
    for old, new in _RES:
        if rest.startswith(new):
            return old + rest[len(new):]
    return rest


def _common_to_diffusers(k: str) -> str | None:
    """Keys both Wan layouts share (stem, middle, head, quant convs); None for the block keys."""
    if m := re.match(r"^(encoder|decoder)\.conv1\.(.*)$", k):
        return f"{m.group(1)}.conv_in.{m.group(2)}"
    if m := re.match(r"^conv([12])\.(.*)$", k):
        return ("quant_conv." if m.group(1) == "1" else "post_quant_conv.") + m.group(2)
    if m := re.match(r"^(encoder|decoder)\.head\.([02])\.(.*)$", k):
        return f"{m.group(1)}.{'norm_out' if m.group(2) == '0' else 'conv_out'}.{m.group(3)}"
    if m := re.match(r"^(encoder|decoder)\.middle\.([012])\.(.*)$", k):
        half, i, rest = m.groups()
        if i == "1":
            return f"{half}.mid_block.attentions.0.{rest}"
        return f"{half}.mid_block.resnets.{int(i) // 2}.{_res_to_diffusers(rest)}"
    return None


def _common_to_original(k: str) -> str | None:
    if m := re.match(r"^(encoder|decoder)\.conv_in\.(.*)$", k):
        return f"{m.group(1)}.conv1.{m.group(2)}"
    if k.startswith("quant_conv."):
        return "conv1." + k[len("quant_conv."):]
    if k.startswith("post_quant_conv."):
        return "conv2." + k[len("post_quant_conv."):]
    if m := re.match(r"^(encoder|decoder)\.(norm_out|conv_out)\.(.*)$", k):
        return f"{m.group(1)}.head.{0 if m.group(2) == 'norm_out' else 2}.{m.group(3)}"
    if m := re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.*)$", k):
        return f"{m.group(1)}.middle.1.{m.group(2)}"
    if m := re.match(r"^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.*)$", k):
        return f"{m.group(1)}.middle.{2 * int(m.group(2))}.{_res_to_original(m.group(3))}"
    return None


def original_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan VAE keys (ComfyUI's files) to diffusers'. Wan 2.1's flat layout goes through
    diffusers' own converter; Wan 2.2's nested one (no converter in diffusers' loaders) is mapped here."""
    if not any(re.match(r"^decoder\.upsamples\.\d+\.upsamples\.", k) for k in tensors):
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        return convert_wan_vae_to_diffusers(dict(tensors))
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        new = _common_to_diffusers(k)
        if new is None and (m := re.match(r"^(encoder|decoder)\.(down|up)samples\.(\d+)\.\2samples\.(\d+)\.(.*)$", k)):
            half, kind, i, j, rest = m.groups()
            if rest.startswith(("resample.", "time_conv.")):
                new = f"{half}.{kind}_blocks.{i}.{kind}sampler.{rest}"
            else:
                new = f"{half}.{kind}_blocks.{i}.resnets.{j}.{_res_to_diffusers(rest)}"
        out[new or k] = v
    return out


def diffusers_to_original(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``original_to_diffusers`` (for export and tests)."""
    residual = any(re.match(r"^encoder\.down_blocks\.\d+\.resnets\.", k) for k in tensors)
    n_res = count_index(tensors, r"^decoder\.up_blocks\.0\.resnets\.(\d+)\.") - 1  # num_res_blocks
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        new = _common_to_original(k)
        if new is None and residual:
            if m := re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", k):
                half, kind, i, j, rest = m.groups()
                new = f"{half}.{kind}samples.{i}.{kind}samples.{j}.{_res_to_original(rest)}"
            elif m := re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(?:down|up)sampler\.(.*)$", k):
                half, kind, i, rest = m.groups()
                j = n_res if kind == "down" else n_res + 1
                new = f"{half}.{kind}samples.{i}.{kind}samples.{j}.{rest}"
        elif new is None:
            if m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", k):
                new = f"encoder.downsamples.{m.group(1)}.{_res_to_original(m.group(2))}"
            elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", k):
                b, r, rest = int(m.group(1)), int(m.group(2)), m.group(3)
                new = f"decoder.upsamples.{b * (n_res + 2) + r}.{_res_to_original(rest)}"
            elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$", k):
                new = f"decoder.upsamples.{int(m.group(1)) * (n_res + 2) + n_res + 1}.{m.group(2)}"
        out[new or k] = v
    return out


def check_statistics(cfg: dict, label: str) -> None:
    """The per-channel latents_mean/latents_std of a Wan-family config: one value per latent channel, std > 0."""
    mean, std, channels = cfg.get("latents_mean") or [], cfg.get("latents_std") or [], cfg["z_dim"]
    if len(mean) != channels or len(std) != channels:
        raise VaeLoadError(f"the config's latents_mean/latents_std have {len(mean)} values but the latent has "
                           f"{channels} channels", label)
    if any(float(s) <= 0 for s in std):
        raise VaeLoadError("the config's latents_std has a value that is not positive", label)
