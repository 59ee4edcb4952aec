"""A weight file of an architecture vaestudio does not read is named for what it is, in one line, exit 4:
one tiny file per row of vaestudio.core.unsupported.MARKERS (a few tensors with the marker keys), through
inspect-vae and reconstruct."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.unsupported import MARKERS

Z = torch.zeros
# (file content, the words the message must hold); diffusers' key names as its classes build them
CASES = {
    "minimax": ({"encoder.conv_in.weight": Z(8, 3, 3, 3, 3), "decoder.register_tokens": Z(1, 4, 8),
                 "decoder.transformer_blocks.0.attn.to_q.weight": Z(8, 8)}, "MiniMax-H3 video VAE"),
    "mochi-half": ({"blocks.2.blocks.3.stack.5.weight": Z(4)}, "one half of a Mochi VAE"),
    "hunyuan-refiner": ({"encoder.conv_in.weight": Z(8, 3, 3, 3, 3), "decoder.conv_in.weight": Z(16, 32, 3, 3, 3),
                         "encoder.down_blocks.0.resnets.0.conv1.weight": Z(8, 8, 3, 3, 3)},
                        "HunyuanImage 2.1 refiner VAE"),
    "magvit": ({"encoder.conv_in.weight": Z(8, 3, 3, 3, 3), "encoder.down_blocks.0.convs.0.norm1.weight": Z(8)},
               "EasyAnimate (Magvit) video VAE"),
    "allegro": ({"encoder.conv_in.weight": Z(8, 3, 3, 3), "encoder.temp_conv_in.weight": Z(8, 8, 3, 1, 1),
                 "encoder.down_blocks.0.resnets.0.norm1.weight": Z(8)}, "Allegro video VAE"),
    "oobleck-comfy": ({"decoder.layers.1.layers.0.beta": Z(8), "encoder.layers.0.weight": Z(8, 2, 7)}, "Oobleck"),
    "oobleck-diffusers": ({"encoder.snake1.alpha": Z(1, 8, 1), "decoder.snake1.alpha": Z(1, 8, 1)}, "Oobleck"),
    "ace-step": ({"vocoder.backbone.channel_layers.0.0.bias": Z(8)}, "ACE-Step music DCAE"),
    "mmaudio": ({"vocoder.activation_post.downsample.lowpass.filter": Z(1, 1, 12)}, "MMAudio audio VAE"),
    "ltx-audio": ({"vocoder.resblocks.0.convs1.0.weight": Z(8, 8, 3)}, "LTX-2 audio VAE"),
    "cascade-a": ({"vquantizer.codebook.weight": Z(16, 4), "in_block.1.weight": Z(8, 12, 1, 1)}, "stage A"),
    "cascade-effnet": ({"backbone.1.0.block.0.1.num_batches_tracked": Z((), dtype=torch.long)}, "stage C encoder"),
    "cascade-previewer": ({"blocks.11.num_batches_tracked": Z((), dtype=torch.long)}, "previewer"),
    "cascade-c": ({"clf.1.weight": Z(8, 8, 1, 1), "clip_txt_mapper.weight": Z(8, 8)}, "stage C diffusion model"),
    "cascade-b": ({"clf.1.weight": Z(8, 8, 1, 1), "clip_mapper.weight": Z(8, 8)}, "stage B diffusion model"),
    "rae": ({"encoder_mean": Z(3), "decoder.decoder_embed.weight": Z(8, 8)}, "RAE"),
    "lora": ({"lora_unet_x.lora_down.weight": Z(4, 8), "lora_unet_x.alpha": torch.ones(())}, "LoRA (2 tensors)"),
    "t5": ({"shared.weight": Z(10, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": Z(8, 8)}, "T5 text encoder"),
    "llm": ({"model.layers.0.self_attn.q_proj.weight": Z(8, 8)}, "language-model text encoder"),
    "flux-dit": ({"double_blocks.0.img_attn.qkv.weight": Z(24, 8)}, "FLUX transformer"),
    "sd3-dit": ({"joint_blocks.0.x_block.attn.qkv.weight": Z(24, 8)}, "SD3 MMDiT transformer"),
    "unet": ({"model.diffusion_model.input_blocks.0.0.weight": Z(8, 4, 3, 3)}, "UNet / diffusion model"),
    "dit": ({"transformer_blocks.0.attn.to_q.weight": Z(8, 8)}, "diffusion transformer without a VAE"),
    "clip": ({"text_model.encoder.layers.0.mlp.fc1.weight": Z(8, 8)}, "text encoder, not a VAE"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_named_for_what_it_is_with_exit_4(tmp_path, name, rgb_image, capsys):
    tensors, words = CASES[name]
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    for args in (["inspect-vae", str(path)], ["reconstruct", str(rgb_image), "--vae", str(path)]):
        assert main(args) == 4, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
        assert "no known" not in err and "Stable Diffusion VAE family" not in err


def test_every_row_of_the_table_is_tested():
    hit = set()
    for tensors, words in CASES.values():
        hit.update(i for i, row in enumerate(MARKERS) if words in row.what.format(n=len(tensors)))
    assert hit == set(range(len(MARKERS))), [MARKERS[i].what for i in set(range(len(MARKERS))) - hit]
