"""Deep Compression Autoencoders (DC-AE, MIT Han Lab): diffusers' ``AutoencoderDC``; SANA's VAE.

A deterministic autoencoder (no log-variance) with 32x downscaling; SANA's f32c32 has 32 latent
channels. ResBlocks at high resolution, EfficientViT blocks (multi-scale linear attention) at low.
The model space is what ``SanaPipeline`` gives its transformer: ``z * scaling_factor`` (0.41407 for
SANA's DC-AE), from the config.

Sources: a diffusers folder (config ``AutoencoderDC``; SANA pipeline folders with ``vae/``), a Hugging
Face id (``mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers``...), and the original single file of the
``mit-han-lab/dc-ae-*`` repositories (``encoder.project_in``, ``encoder.stages.N.op_list...``),
converted with diffusers' ``convert_autoencoder_dc_checkpoint_to_diffusers``; ``diffusers_to_original``
is its inverse for tests. The architecture (block types, channels, layers, attention scales, up- and
downsampling kinds) is read from shapes; activations follow the norms as in every published config.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

_ORIGINAL_ANCHOR = "decoder.project_in.conv.weight"
_DIFFUSERS_ANCHOR = "decoder.conv_in.weight"
_DC_BLOCK = re.compile(r"^encoder\.down_blocks\.\d+\.\d+\.")

_BLOCK_TO_ORIGINAL = (
    ("conv1.", "main.conv1.conv."), ("conv2.", "main.conv2.conv."), ("norm.", "main.conv2.norm."),
    ("conv.", "main.conv.conv."),
    ("attn.to_qkv_multiscale.0.proj_in.", "context_module.main.aggreg.0.0."),
    ("attn.to_qkv_multiscale.0.proj_out.", "context_module.main.aggreg.0.1."),
    ("attn.norm_out.", "context_module.main.proj.norm."),
    ("conv_out.conv_inverted.", "local_module.main.inverted_conv.conv."),
    ("conv_out.conv_depth.", "local_module.main.depth_conv.conv."),
    ("conv_out.conv_point.", "local_module.main.point_conv.conv."),
    ("conv_out.norm.", "local_module.main.point_conv.norm."),
)


def original_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original DC-AE keys (mit-han-lab's model.safetensors) to diffusers', with diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_autoencoder_dc_checkpoint_to_diffusers

    return convert_autoencoder_dc_checkpoint_to_diffusers(dict(tensors))


def diffusers_to_original(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``original_to_diffusers`` (for export and tests)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if m := re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(\d+)\.(.*)$", k):
            half, _, i, j, rest = m.groups()
            base = f"{half}.stages.{i}.op_list.{j}."
            if mq := re.match(r"^attn\.to_([qkv])\.weight$", rest):
                qkv.setdefault(base, {})[mq.group(1)] = v
                continue
            if rest == "attn.to_out.weight":
                out[base + "context_module.main.proj.conv.weight"] = v[:, :, None, None]
                continue
            new = next((orig + rest[len(d):] for d, orig in _BLOCK_TO_ORIGINAL if rest.startswith(d)), rest)
            out[base + new] = v
            continue
        for d, orig in (("encoder.conv_in.", "encoder.project_in.conv."), ("encoder.conv_out.", "encoder.project_out.0.conv."),
                        ("decoder.conv_in.", "decoder.project_in.conv."), ("decoder.norm_out.", "decoder.project_out.0."),
                        ("decoder.conv_out.", "decoder.project_out.2.conv.")):
            if k.startswith(d):
                k = orig + k[len(d):]
                break
        out[k] = v
    for base, parts in qkv.items():
        out[base + "context_module.main.qkv.conv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])[:, :, None, None]
    return out


# -- config from shapes ----------------------------------------------------------------------------

def _ops(t, half: str, i: int) -> dict[int, set[str]]:
    kind = "down" if half == "encoder" else "up"
    ops: dict[int, set[str]] = {}
    for k in t:
        if m := re.match(rf"^{half}\.{kind}_blocks\.{i}\.(\d+)\.(.*)$", k):
            ops.setdefault(int(m.group(1)), set()).add(m.group(2))
    return ops


def _is_resample(keys: set[str]) -> bool:
    return keys <= {"conv.weight", "conv.bias"}


def _half(t, half: str, n: int):
    types, channels, layers, scales, norms, resample = [], [], [], [], [], []
    kind = "down" if half == "encoder" else "up"
    for i in range(n):
        ops = _ops(t, half, i)
        blocks = [j for j in sorted(ops) if not _is_resample(ops[j])]
        resample += [(i, j) for j in sorted(ops) if _is_resample(ops[j])]
        layers.append(len(blocks))
        if not blocks:
            types.append("ResBlock"), channels.append(None), scales.append(()), norms.append("rms_norm")
            continue
        p = f"{half}.{kind}_blocks.{i}.{blocks[0]}."
        if "attn.to_q.weight" in ops[blocks[0]]:
            types.append("EfficientViTBlock")
            channels.append(int(t[p + "attn.to_q.weight"].shape[1]))
            n_scales = 1 + max(int(m.group(1)) for k in ops[blocks[0]]
                               if (m := re.match(r"attn\.to_qkv_multiscale\.(\d+)\.", k)))
            scales.append(tuple(int(t[p + f"attn.to_qkv_multiscale.{s}.proj_in.weight"].shape[-1])
                                for s in range(n_scales)))
            norms.append("rms_norm")
        else:
            types.append("ResBlock")
            channels.append(int(t[p + "conv1.weight"].shape[0]))
            scales.append(())
            norms.append("batch_norm" if p + "norm.running_mean" in t else "rms_norm")
    return types, channels, layers, scales, norms, resample


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderDC config of diffusers-layout tensors (KeyError...: blocks are missing)."""
    latent = int(t["encoder.conv_out.weight"].shape[0])
    if int(t["decoder.conv_in.weight"].shape[1]) != latent:
        raise ValueError("encoder and decoder latent channels differ")
    n = max(count_index(t, r"^encoder\.down_blocks\.(\d+)\."), count_index(t, r"^decoder\.up_blocks\.(\d+)\."))
    e_types, e_ch, e_layers, e_scales, _, e_res = _half(t, "encoder", n)
    d_types, d_ch, d_layers, d_scales, d_norms, d_res = _half(t, "decoder", n)
    last = int(t["encoder.conv_out.weight"].shape[1])
    e_ch = [c if c is not None else (e_ch[i + 1] // 2 if i + 1 < n and e_ch[i + 1] else last) for i, c in enumerate(e_ch)]
    d_ch = [c if c is not None else (d_ch[i + 1] // 2 if i + 1 < n and d_ch[i + 1] else last) for i, c in enumerate(d_ch)]
    down = "Conv"
    if e_res:
        i, j = e_res[0]
        down = "pixel_unshuffle" if int(t[f"encoder.down_blocks.{i}.{j}.conv.weight"].shape[0]) * 4 == e_ch[i + 1] else "Conv"
    up = "interpolate"
    if d_res:
        i, j = d_res[0]
        up = "pixel_shuffle" if int(t[f"decoder.up_blocks.{i}.{j}.conv.weight"].shape[0]) == 4 * d_ch[i] else "interpolate"
    head_dims = {int(v.shape[1]) for k, v in t.items() if k.endswith("attn.to_qkv_multiscale.0.proj_out.weight")}
    return {
        "in_channels": int(t["encoder.conv_in.weight" if "encoder.conv_in.weight" in t else "encoder.conv_in.conv.weight"].shape[1]),
        "latent_channels": latent,
        "attention_head_dim": head_dims.pop() if len(head_dims) == 1 else 32,
        "encoder_block_types": e_types, "decoder_block_types": d_types,
        "encoder_block_out_channels": e_ch, "decoder_block_out_channels": d_ch,
        "encoder_layers_per_block": e_layers, "decoder_layers_per_block": d_layers,
        "encoder_qkv_multiscales": e_scales, "decoder_qkv_multiscales": d_scales,
        "upsample_block_type": up, "downsample_block_type": down,
        "decoder_norm_types": d_norms,
        "decoder_act_fns": ["relu" if nt == "batch_norm" else "silu" for nt in d_norms],
    }


class DcAe(TorchAutoencoder):
    """A DC-AE; deterministic latents, model space ``z * scaling_factor``."""

    architecture = "dc-ae"
    has_logvar = False
    cancel_blocks = ("ResBlock", "EfficientViTBlock", "DCDownBlock2d", "DCUpBlock2d")

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        self.tile_overlap = 128  # 4 latent pixels at 32x

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z)


class DcAeArchitecture(DiffusersArchitecture):
    name = "dc-ae"
    label = "DC-AE (AutoencoderDC, SANA)"
    order = 70
    config_classes = ("AutoencoderDC",)
    families = ("sana",)
    sources = (
        ("single file", "the original mit-han-lab/dc-ae-* model.safetensors (encoder.stages.N.op_list...), "
                        ".safetensors or .pth; or diffusers keys"),
        ("diffusers folder", "config.json (AutoencoderDC) + weights, or a SANA pipeline folder with vae/"),
        ("Hugging Face id", "e.g. mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers, Efficient-Large-Model/Sana_1600M_1024px_diffusers"),
    )
    diffusers_class = "AutoencoderDC"
    vae_class = DcAe
    layouts = (Layout("original", _ORIGINAL_ANCHOR, (), original_to_diffusers), Layout("diffusers", _DIFFUSERS_ANCHOR))
    short = "DC-AE"
    shipped = "dc-ae-f32c32-sana"
    guessed = ("attention_head_dim", "decoder_act_fns")  # activations follow the norms in every published config
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as SanaPipeline does",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        if find_prefix(wf.tensors, _ORIGINAL_ANCHOR) is not None:
            return True
        prefix = find_prefix(wf.tensors, _DIFFUSERS_ANCHOR)
        return prefix is not None and any(_DC_BLOCK.match(k[len(prefix):]) for k in wf.tensors if k.startswith(prefix))

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        out_w = tensors.get("decoder.conv_out.weight", tensors.get("decoder.conv_out.conv.weight"))
        out_ch = None if out_w is None else int(out_w.shape[0])
        if cfg["in_channels"] != 3 or out_ch not in (3, 12):
            raise VaeLoadError(f"an image DC-AE takes and gives 3 colour channels, this one takes "
                               f"{cfg['in_channels']} and gives {out_ch}", label)

    def downscale_of(self, cfg: dict) -> int:
        return 2 ** (len(cfg["encoder_block_out_channels"]) - 1)


ARCHITECTURE = DcAeArchitecture()
