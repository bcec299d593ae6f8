#!/usr/bin/env python3
"""Goldens for the Wan-VAE decoder, produced by diffusers' AutoencoderKLWan.

The script builds a tiny AutoencoderKLWan with the real model's structure (channel multipliers
[1, 2, 4, 4], 2 residual blocks per stage, temporal downsampling [False, True, True], so the
decoder upsamples in time in its first two stages) but a base width of 4 channels, overwrites
EVERY parameter with seeded random values (including the RMS_norm gammas), decodes a random
latent of odd size (F=3, H=5, W=7 -> 9 frames of 40x56) and writes:

  diffusers/config.json, diffusers/diffusion_pytorch_model.safetensors   (save_pretrained)
  original/Wan2.1_VAE.pth   the same weights under the Wan2.1 repository's names, written by
                            torch.save(state_dict) like the published checkpoint
  io.safetensors            inputs, output, and a few intermediates (see assets/goldens/README.md)
  tiled.safetensors         the same latent through diffusers' tiled decode (enable_tiling), for
                            small tiles that cut the 5 x 7 latent into 2 x 3 and 3 x 4 tiles

Like the published files, both weight files hold the encoder too; only the decoder is used here.

Run from the repository root:  python tools/make_vae_goldens.py
"""

import json
import math
import pickletools
import shutil
import zipfile
from collections import OrderedDict

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from diffusers.utils import logging as diffusers_logging

from golden_utils import (
    GOLDENS,
    check_roundtrip,
    rel,
    rel_l2,
    save_json,
    save_tensors,
    setup_torch,
    versions,
)

OUT_DIR = GOLDENS / "vae" / "tiny"
SEED = 2103

CONFIG = dict(
    base_dim=4,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    # latents_mean / latents_std keep diffusers' defaults: the 16 constants of the real model.
)
LATENT_SHAPE = (16, 3, 5, 7)  # C, F, H, W
# Tiled decodes: (tile, overlap) in latent pixels. diffusers takes output pixels: tiles of
# 8 * tile, one every 8 * (tile - overlap) (tile_sample_min_* and tile_sample_stride_*). The
# second leaves last tiles narrower than the overlap.
TILINGS = [(4, 1), (4, 2)]
# The decoder's last convolution gets a smaller gain so that most output values lie inside
# [-1, 1] and only about 1% are clamped (a clamp everywhere would hide errors).
CONV_OUT_GAIN = 0.5


# --------------------------------------------------------------------------------------------
# Random parameters
# --------------------------------------------------------------------------------------------

def randomize_parameters(vae, gen):
    """Weights: normal, std = gain / sqrt(fan_in). Biases: normal, std 0.05. Gammas: U[0.5, 1.5]."""
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif name.endswith(".weight"):
                fan_in = p[0].numel()
                gain = CONV_OUT_GAIN if name == "decoder.conv_out.weight" else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"parameter {name} has no initialisation rule")


# --------------------------------------------------------------------------------------------
# Key layouts
# --------------------------------------------------------------------------------------------

# Parts of a residual block: diffusers name -> index in the original nn.Sequential `residual`
# (0 RMS_norm, 1 SiLU, 2 CausalConv3d, 3 RMS_norm, 4 SiLU, 5 Dropout, 6 CausalConv3d).
_RESNET_PARTS = {
    "norm1.": "residual.0.",
    "conv1.": "residual.2.",
    "norm2.": "residual.3.",
    "conv2.": "residual.6.",
    "conv_shortcut.": "shortcut.",
}


def _resnet_part(rest):
    for src, dst in _RESNET_PARTS.items():
        if rest.startswith(src):
            return dst + rest[len(src):]
    raise KeyError(rest)


def _mid_block(prefix, rest):
    # mid_block.resnets.0 -> middle.0, attentions.0 -> middle.1, resnets.1 -> middle.2
    kind, index, tail = rest.split(".", 2)
    if kind == "resnets":
        return f"{prefix}.middle.{2 * int(index)}.{_resnet_part(tail)}"
    if kind == "attentions":
        return f"{prefix}.middle.{2 * int(index) + 1}.{tail}"
    raise KeyError(rest)


def diffusers_key_to_original(key, num_res_blocks):
    """Map one diffusers AutoencoderKLWan key to the Wan2.1 repository's WanVAE_ name."""
    simple = {
        "quant_conv.": "conv1.",
        "post_quant_conv.": "conv2.",
        "encoder.conv_in.": "encoder.conv1.",
        "decoder.conv_in.": "decoder.conv1.",
        "encoder.norm_out.": "encoder.head.0.",
        "encoder.conv_out.": "encoder.head.2.",
        "decoder.norm_out.": "decoder.head.0.",
        "decoder.conv_out.": "decoder.head.2.",
    }
    for src, dst in simple.items():
        if key.startswith(src):
            return dst + key[len(src):]
    for side in ("encoder", "decoder"):
        if key.startswith(f"{side}.mid_block."):
            return _mid_block(side, key[len(f"{side}.mid_block."):])
    if key.startswith("encoder.down_blocks."):
        # The encoder's down_blocks is already the flat list of the original `downsamples`
        # (residual blocks and Resample layers in order).
        index, rest = key[len("encoder.down_blocks."):].split(".", 1)
        if rest.startswith(("resample.", "time_conv.")):
            return f"encoder.downsamples.{index}.{rest}"
        return f"encoder.downsamples.{index}.{_resnet_part(rest)}"
    if key.startswith("decoder.up_blocks."):
        # The original `upsamples` is flat: per stage, num_res_blocks + 1 residual blocks and
        # then (except after the last stage) one Resample.
        block, kind, index, rest = key[len("decoder.up_blocks."):].split(".", 3)
        base = int(block) * (num_res_blocks + 2)
        if kind == "resnets":
            return f"decoder.upsamples.{base + int(index)}.{_resnet_part(rest)}"
        if kind == "upsamplers":
            return f"decoder.upsamples.{base + num_res_blocks + 1}.{rest}"
    raise KeyError(f"no original name for diffusers key {key}")


def to_original_layout(state_dict, num_res_blocks):
    """An OrderedDict like torch's state_dict(), including its `_metadata` attribute."""
    out = OrderedDict(
        (diffusers_key_to_original(k, num_res_blocks), v.detach().clone().contiguous())
        for k, v in state_dict.items()
    )
    # torch.nn.Module.state_dict() attaches {"module path": {"version": 1}} for every module; a
    # loader of the published .pth meets this in the pickle, so the golden carries it as well.
    meta = OrderedDict({"": {"version": 1}})
    for k in out:
        parts = k.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            meta.setdefault(".".join(parts[:i]), {"version": 1})
    out._metadata = meta
    return out


def pickle_globals(pth_path):
    """The GLOBAL references inside a torch.save zip (what a restricted unpickler must allow)."""
    with zipfile.ZipFile(pth_path) as z:
        names = z.namelist()
        data = z.read(next(n for n in names if n.endswith("data.pkl")))
    found = []
    pending = []
    for op, arg, _pos in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pending.append(arg)
        if op.name == "GLOBAL":
            found.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(pending) >= 2:
            found.append(f"{pending[-2]}.{pending[-1]}")
    return sorted(set(found)), names


# --------------------------------------------------------------------------------------------
# Decode with recorded intermediates
# --------------------------------------------------------------------------------------------

def decode_with_intermediates(vae, z):
    """vae.decode(z) (batch 1) with the per-chunk outputs of a few decoder modules recorded.

    diffusers decodes one latent frame at a time; a module hooked here runs once per latent
    frame, and its chunk outputs are concatenated along time to give one tensor per module.
    """
    chunks = {"post_quant": [], "dec_conv_in": [], "dec_mid": [], "dec_up0": [], "decoder_raw": []}
    modules = {
        "post_quant": vae.post_quant_conv,
        "dec_conv_in": vae.decoder.conv_in,
        "dec_mid": vae.decoder.mid_block,
        "dec_up0": vae.decoder.up_blocks[0],
        "decoder_raw": vae.decoder,
    }
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: chunks[name].append(out.detach().clone()))
        for name, m in modules.items()
    ]
    try:
        with torch.no_grad():
            frames = vae.decode(z[None], return_dict=False)[0][0]
    finally:
        for h in hooks:
            h.remove()
    rec = {name: torch.cat(parts, dim=2)[0] for name, parts in chunks.items()}
    rec["chunk_frames"] = torch.tensor([p.shape[2] for p in chunks["decoder_raw"]], dtype=torch.int64)
    return frames, rec


def tiled_decode(vae, z, tile, overlap):
    """vae.decode(z) (batch 1) through diffusers' tiled_decode."""
    vae.enable_tiling(
        tile_sample_min_height=8 * tile,
        tile_sample_min_width=8 * tile,
        tile_sample_stride_height=8 * (tile - overlap),
        tile_sample_stride_width=8 * (tile - overlap),
    )
    try:
        with torch.no_grad():
            return vae.decode(z[None], return_dict=False)[0][0]
    finally:
        vae.disable_tiling()


def tiled_name(tile, overlap):
    return f"frames_tile{tile}_overlap{overlap}"


def main():
    setup_torch()
    diffusers_logging.set_verbosity_error()
    print("versions:", json.dumps(versions()))
    print("\n=== VAE golden 'tiny' ===")
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    gen = torch.Generator().manual_seed(SEED)

    vae = AutoencoderKLWan(**CONFIG).eval()
    randomize_parameters(vae, gen)
    state_dict = {k: v.detach().clone() for k, v in vae.state_dict().items()}

    # The latent as the sampler produces it (normalised), and as vae.decode receives it after the
    # pipeline's de-normalisation: z = latent / (1 / std) + mean, per channel, in float32.
    latent = torch.randn(LATENT_SHAPE, generator=gen)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
    latent_denormalized = latent / inv_std + mean

    frames, rec = decode_with_intermediates(vae, latent_denormalized)
    f, h, w = LATENT_SHAPE[1:]
    assert frames.shape == (3, 4 * (f - 1) + 1, 8 * h, 8 * w), frames.shape
    assert torch.equal(frames, rec["decoder_raw"].clamp(-1, 1))
    clamped = (rec["decoder_raw"].abs() > 1).double().mean().item()
    print(f"  output {tuple(frames.shape)}, {100 * clamped:.2f}% of the values clamped to [-1, 1]")
    print(f"  latent frames -> output frames per chunk: {rec['chunk_frames'].tolist()}")

    # Conditioning: the same decode in float64.
    vae64 = AutoencoderKLWan(**CONFIG).eval()
    vae64.load_state_dict(state_dict)
    vae64 = vae64.double()
    with torch.no_grad():
        frames64 = vae64.decode(latent_denormalized[None].double(), return_dict=False)[0][0]
    cond = rel_l2(frames, frames64)
    print(f"  relative L2 of the float32 decode against float64: {cond:.3e}")
    assert cond < 1e-5

    # Tiled decodes, each also checked against float64.
    tiled = {}
    for tile, overlap in TILINGS:
        out = tiled_decode(vae, latent_denormalized, tile, overlap)
        assert out.shape == frames.shape, out.shape
        out64 = tiled_decode(vae64, latent_denormalized.double(), tile, overlap)
        cond_tiled = rel_l2(out, out64)
        assert cond_tiled < 1e-5
        print(
            f"  tiled decode, tile {tile} overlap {overlap}: relative L2 {rel_l2(out, frames):.3e} "
            f"from the untiled frames, {cond_tiled:.3e} from float64"
        )
        tiled[tiled_name(tile, overlap)] = out

    # 1. diffusers layout
    diff_dir = OUT_DIR / "diffusers"
    vae.save_pretrained(diff_dir, safe_serialization=True)
    print(f"  wrote {rel(diff_dir / 'config.json')}")
    print(f"  wrote {rel(diff_dir / 'diffusion_pytorch_model.safetensors')}")
    check_roundtrip(diff_dir / "diffusion_pytorch_model.safetensors", state_dict)

    # 2. original layout, checked against diffusers' own original -> diffusers converter
    original = to_original_layout(state_dict, CONFIG["num_res_blocks"])
    back = convert_wan_vae_to_diffusers(dict(original))
    assert set(back) == set(state_dict), sorted(set(back) ^ set(state_dict))
    for k in state_dict:
        assert torch.equal(back[k], state_dict[k]), k
    pth = OUT_DIR / "original" / "Wan2.1_VAE.pth"
    pth.parent.mkdir(parents=True, exist_ok=True)
    torch.save(original, pth)
    print(f"  wrote {rel(pth)} ({pth.stat().st_size} bytes, {len(original)} tensors)")
    reloaded = torch.load(pth, map_location="cpu", weights_only=True)
    assert list(reloaded) == list(original)
    for k in original:
        assert torch.equal(reloaded[k], original[k]) and torch.isfinite(reloaded[k]).all(), k
    globals_used, zip_names = pickle_globals(pth)
    print(f"  pickle globals in {pth.name}: {globals_used}")
    print(f"  zip entries: {zip_names[:3]} ... ({len(zip_names)} entries)")

    # Sanity: decoding with the reloaded diffusers folder reproduces the frames.
    vae2 = AutoencoderKLWan.from_pretrained(diff_dir).eval()
    with torch.no_grad():
        again = vae2.decode(latent_denormalized[None], return_dict=False)[0][0]
    err = rel_l2(again, frames)
    print(f"  frames from the reloaded diffusers folder: relative L2 {err:.3e}")
    assert err < 1e-6

    # 3. inputs, output, intermediates
    io = {
        "latent": latent,
        "latent_denormalized": latent_denormalized,
        "frames": frames,
        "post_quant": rec["post_quant"],
        "dec_conv_in": rec["dec_conv_in"],
        "dec_mid": rec["dec_mid"],
        "dec_up0": rec["dec_up0"],
    }
    # One metadata entry only: safetensors writes the metadata map in no fixed order.
    meta = {"generator": "tools/make_vae_goldens.py, configuration tiny"}
    written = save_tensors(OUT_DIR / "io.safetensors", io, metadata=meta)
    check_roundtrip(OUT_DIR / "io.safetensors", written)

    written = save_tensors(OUT_DIR / "tiled.safetensors", tiled, metadata=meta)
    check_roundtrip(OUT_DIR / "tiled.safetensors", written)

    save_json(
        GOLDENS / "vae" / "goldens.json",
        {
            "versions": versions(),
            "tiny": {
                "config": {k: v for k, v in vae.config.items() if not k.startswith("_")},
                "seed": SEED,
                "latent_shape": list(LATENT_SHAPE),
                "frames_shape": list(frames.shape),
                "fraction_clamped": clamped,
                "float32_vs_float64_rel_l2": cond,
                "pth_pickle_globals": globals_used,
                "tiled_latent_pixels": {
                    tiled_name(t, o): {"tile": t, "overlap": o} for t, o in TILINGS
                },
            },
        },
    )


if __name__ == "__main__":
    main()
