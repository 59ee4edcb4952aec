"""A diffusers folder's config.json is the truth for every value it sets; the shapes only fill in what it
does not say. For every diffusers-backed architecture, a folder whose config sets values the weights
cannot show (group norm sizes, epsilons, activations, scaling, latent statistics) reconstructs exactly
as diffusers' own class loaded from that folder with ``from_pretrained``, in the raw latent, the model
space and the decoded image.

Each model is a tiny random instance of the real diffusers class, saved with ``save_pretrained``."""

from __future__ import annotations

import pytest
import torch
from helpers.archs import as_input, close, perturbed, pixels, to_hwc

from vaestudio.core.sources import load_vae
from vaestudio.core.tensors import patchify

H, W = 64, 96  # a multiple of every downscale factor (32 for DC-AE and HunyuanImage)
MEAN16, STD16 = [0.05 * (i - 8) for i in range(16)], [0.6 + 0.1 * (i % 4) for i in range(16)]
MEAN64, STD64 = [0.03 * (i - 32) for i in range(64)], [0.5 + 0.05 * (i % 8) for i in range(64)]
MEAN48, STD48 = [0.02 * (i - 24) for i in range(48)], [0.7 + 0.05 * (i % 6) for i in range(48)]
WAN = dict(base_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=2, dropout=0.1)
DC_TYPES = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3


def _kl(model, x):  # the KL models: the posterior's mean, and its decode
    mean = model.encode(x).latent_dist.mean
    return mean, model.decode(mean).sample


def _wan(model, x):  # one frame of a video VAE
    mean = model.encode(x[:, :, None]).latent_dist.mean
    return mean[:, :, 0], model.decode(mean).sample[:, :, 0]


def _rgba(model, x):  # one frame of Qwen-Image 2.1's RGBA VAE: an opaque alpha channel in, RGB out
    mean = model.encode(torch.cat([x, torch.ones_like(x[:, :1])], 1)[:, :, None]).latent_dist.mean
    return mean[:, :, 0], model.decode(mean).sample[:, :3, 0]


def _seeded(model, x):  # the consistency decoder: 2 steps from noise seeded 0, as vaestudio decodes
    mean = model.encode(x).latent_dist.mean
    return mean, model.decode(mean, generator=torch.Generator().manual_seed(0)).sample


def _dc(model, x):
    lat = model.encode(x).latent
    return lat, model.decode(lat).sample


def _tiny(model, x):
    lat = model.encode(x).latents
    return lat, model.decode(lat).sample


def _scaled(model, z):  # (z - shift) * scale, as the SD, SANA and HunyuanImage pipelines do
    return (z - (model.config.get("shift_factor") or 0.0)) * model.config.scaling_factor


def _mode(model, x):  # one frame of a video VAE through its posterior's mode (Cosmos: the latent itself)
    z = model.encode(x[:, :, None]).latent_dist.mode()
    return z[:, :, 0], model.decode(z).sample[:, :, 0]


def _stats(model, z):  # LTX-Video, LTX-2, Mochi: per channel (z - mean) * scaling_factor / std (pipelines' code)
    c = model.config
    buffers = dict(model.named_buffers())  # LTX: the model's own statistics; Mochi: the config's
    mean, std = (buffers["latents_mean"], buffers["latents_std"]) if "latents_mean" in buffers else (
        torch.tensor(c.latents_mean), torch.tensor(c.latents_std))
    return (z - mean.view(1, -1, 1, 1)) * c.scaling_factor / std.view(1, -1, 1, 1)


def _cosmos(model, z):  # CosmosVideoToWorldPipeline on one latent frame: frame 0's statistics, sigma_data 0.5
    c = model.config
    mean = torch.tensor(c.latents_mean).view(c.latent_channels, -1)[:, 0].view(1, -1, 1, 1)
    std = torch.tensor(c.latents_std).view(c.latent_channels, -1)[:, 0].view(1, -1, 1, 1)
    return (z - mean) * 0.5 / std


def _flux2(model, z):  # Flux2Pipeline: patchified 2x2, normalised by the BatchNorm's running statistics
    p = patchify(z, 2)
    mean = model.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + model.config.batch_norm_eps)
    return (p - mean) / std


def _normalised(model, z):  # the Wan and Qwen-Image pipelines: per channel (z - latents_mean) / latents_std
    mean = torch.tensor(model.config.latents_mean).view(1, -1, 1, 1)
    return (z - mean) / torch.tensor(model.config.latents_std).view(1, -1, 1, 1)


def _make(name: str):
    import diffusers

    torch.manual_seed(7)
    if name == "autoencoder-kl":
        m = diffusers.AutoencoderKL(
            block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            act_fn="mish", scaling_factor=0.5, shift_factor=0.1)
        return m, _kl, _scaled
    if name == "flux2":
        m = diffusers.AutoencoderKLFlux2(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=32,
                                         norm_num_groups=8, act_fn="mish", batch_norm_eps=0.05)
        with torch.no_grad():
            m.bn.running_mean.normal_(0, 0.5)
            m.bn.running_var.uniform_(0.01, 0.1)  # small, so the epsilon matters
        return m, _kl, _flux2
    if name == "wan2.1":
        return diffusers.AutoencoderKLWan(z_dim=16, latents_mean=MEAN16, latents_std=STD16, **WAN), _wan, _normalised
    if name == "qwen-image":
        m = diffusers.AutoencoderKLQwenImage(z_dim=16, latents_mean=MEAN16, latents_std=STD16, **WAN)
        return m, _wan, _normalised
    if name == "wan2.2":
        m = diffusers.AutoencoderKLWan(z_dim=48, decoder_base_dim=12, is_residual=True, in_channels=12, out_channels=12,
                                       patch_size=2, scale_factor_spatial=16, latents_mean=MEAN48, latents_std=STD48,
                                       **WAN)
        return m, _wan, _normalised
    if name == "qwen-image-2.1":  # RGBA: the image fed opaque, as QwenImage21Pipeline converts RGB to RGBA
        m = diffusers.AutoencoderKLQwenImage21(base_dim=8, decoder_base_dim=12, dim_mult=[1, 2, 4, 8, 8],
                                               num_res_blocks=1, dropout=0.1, latents_mean=MEAN64, latents_std=STD64)
        return m, _rgba, _normalised
    if name == "asymmetric":  # decoded without a mask, as AsymmetricAutoencoderKL.decode(z)
        m = diffusers.AsymmetricAutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, down_block_out_channels=(32,) * 4, layers_per_down_block=1,
            up_block_types=("UpDecoderBlock2D",) * 4, up_block_out_channels=(32, 32, 64, 64), layers_per_up_block=2,
            norm_num_groups=8, act_fn="mish", scaling_factor=0.5)
        return m, _kl, _scaled
    if name == "consistency-decoder":
        m = diffusers.ConsistencyDecoderVAE(
            encoder_block_out_channels=(8, 8, 16, 16), encoder_layers_per_block=1, encoder_norm_num_groups=4,
            encoder_act_fn="mish", decoder_block_out_channels=(8, 16, 16, 32), decoder_layers_per_block=1,
            decoder_norm_num_groups=4, decoder_norm_eps=0.1, scaling_factor=0.5)
        return m, _seeded, _scaled
    if name == "dc-ae":
        m = diffusers.AutoencoderDC(
            in_channels=3, latent_channels=32, attention_head_dim=8, encoder_block_types=DC_TYPES,
            decoder_block_types=DC_TYPES, encoder_block_out_channels=(8, 16, 16, 32, 32, 32),
            decoder_block_out_channels=(8, 16, 16, 32, 32, 32), encoder_layers_per_block=(1,) * 6,
            decoder_layers_per_block=(1,) * 6, encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
            decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), upsample_block_type="interpolate",
            downsample_block_type="Conv", decoder_norm_types="rms_norm", decoder_act_fns="relu",
            decoder_conv_act_fn="silu", encoder_out_shortcut=False, decoder_in_shortcut=False, scaling_factor=0.3)
        return m, _dc, _scaled
    if name == "hunyuan-image":
        m = diffusers.AutoencoderKLHunyuanImage(
            in_channels=3, out_channels=3, latent_channels=64, block_out_channels=(32, 32, 32, 64, 64, 128),
            layers_per_block=1, spatial_compression_ratio=32, sample_size=128, scaling_factor=0.5)
        return m, _kl, _scaled
    if name == "cogvideox":  # a CogVideoX VAE on one frame (its group norms, epsilon, scaling from the config)
        m = diffusers.AutoencoderKLCogVideoX(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                                             norm_eps=1e-3, scaling_factor=0.7)
        return m, _wan, _scaled
    if name == "hunyuan-video":  # one frame; its group norms, activation and scaling from the config
        m = diffusers.AutoencoderKLHunyuanVideo(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                                                act_fn="mish", scaling_factor=0.5)
        return m, _wan, _scaled
    if name == "hunyuan-video-15":  # one frame; its scaling from the config
        m = diffusers.AutoencoderKLHunyuanVideo15(block_out_channels=(8, 16, 16, 32, 64), layers_per_block=1,
                                                  scaling_factor=0.5)
        return m, _wan, _scaled
    if name == "ltx-video":  # one frame; its epsilon, causality and scaling from the config
        m = diffusers.AutoencoderKLLTXVideo(block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 8, 16, 16),
                                            layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
                                            resnet_norm_eps=1e-2, decoder_causal=True, scaling_factor=0.5)
        with torch.no_grad():
            m.latents_mean.copy_(torch.linspace(-0.2, 0.2, 128))
            m.latents_std.copy_(torch.linspace(0.6, 1.4, 128))
        return m, _mode, _stats
    if name == "ltx2-video":  # one frame; its padding modes, epsilon and scaling from the config
        m = diffusers.AutoencoderKLLTX2Video(block_out_channels=(8, 16, 16, 32), decoder_block_out_channels=(8, 16, 32),
                                             layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 4,
                                             spatial_compression_ratio=32, temporal_compression_ratio=8,
                                             decoder_spatial_padding_mode="zeros", resnet_norm_eps=1e-2, scaling_factor=0.5)
        with torch.no_grad():
            m.latents_mean.copy_(torch.linspace(-0.2, 0.2, 128))
            m.latents_std.copy_(torch.linspace(0.6, 1.4, 128))
        return m, _mode, _stats
    if name == "mochi":  # one frame; its activation, statistics and scaling from the config
        m = diffusers.AutoencoderKLMochi(encoder_block_out_channels=(32, 32, 32, 64), decoder_block_out_channels=(32, 32, 32, 64),
                                         layers_per_block=(1,) * 5, act_fn="mish", scaling_factor=0.5,
                                         latents_mean=MEAN16[:12], latents_std=STD16[:12])
        return m, _mode, _stats
    if name == "cosmos":  # one frame; its attention placement and statistics (per latent frame) from the config
        m = diffusers.AutoencoderKLCosmos(encoder_block_out_channels=(16, 32, 32, 32), decode_block_out_channels=(32,) * 4,
                                          num_layers=1, resolution=64, attention_resolutions=(16,),
                                          latents_mean=MEAN16 * 2, latents_std=STD16 * 2)
        return m, _mode, _cosmos
    if name == "taesd":
        m = diffusers.AutoencoderTiny(latent_channels=4, act_fn="mish", upsample_fn="bilinear", scaling_factor=0.5,
                                      shift_factor=0.1)
        return m, _tiny, _scaled
    raise AssertionError(name)


#: case -> the architecture that must load it
ARCHS = {"autoencoder-kl": "autoencoder-kl", "flux2": "flux2", "wan2.1": "wan", "qwen-image": "wan", "wan2.2": "wan",
         "qwen-image-2.1": "qwen-image-2.1", "asymmetric": "asymmetric-kl",
         "consistency-decoder": "consistency-decoder",
         "dc-ae": "dc-ae", "hunyuan-image": "hunyuan-image", "taesd": "taesd",
         "cogvideox": "cogvideox", "hunyuan-video": "hunyuan-video",
         "hunyuan-video-15": "hunyuan-video-15", "ltx-video": "ltx-video", "ltx2-video": "ltx2-video", "mochi": "mochi",
         "cosmos": "cosmos"}


@pytest.mark.parametrize("name", list(ARCHS))
def test_a_folders_config_is_the_truth(tmp_path, name):
    model, run, space = _make(name)
    perturbed(model, 0.03).save_pretrained(tmp_path / "vae")
    ref = type(model).from_pretrained(tmp_path / "vae").eval()
    vae = load_vae(tmp_path / "vae")
    assert vae.info.architecture == ARCHS[name]
    x = pixels(H, W, seed=4)
    enc = vae.encode(x)
    with torch.no_grad():
        raw, img = run(ref, as_input(x))
    close(enc.raw, raw[0])
    close(enc.latent, space(ref, raw)[0])
    close(vae.decode(enc.latent, H, W).pixels, to_hwc(img))
