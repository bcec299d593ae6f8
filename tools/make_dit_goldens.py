#!/usr/bin/env python3
"""Goldens for the Wan2.1 diffusion transformer (DiT), produced by diffusers' WanTransformer3DModel.

For each tiny configuration below, this script
  1. builds a WanTransformer3DModel and overwrites EVERY parameter with seeded random values
     (weights, biases, RMSNorm/LayerNorm gains, scale-shift tables), so no term of the
     forward pass is silently zero or one;
  2. runs one forward pass in float32 on fixed random inputs and records the output velocity
     plus intermediate tensors (time embedding, patch tokens, per-block outputs, ...);
  3. writes the same weights in several on-disk layouts:
       diffusers/   config.json + diffusion_pytorch_model.safetensors, written by save_pretrained
       original/    the Wan2.1 repository's key names and config.json fields
       comfyui/     original keys prefixed with "model.diffusion_model.", one file
     (which layouts and dtypes each configuration gets is listed in CONFIGS);
  4. checks that diffusers' own original->diffusers converter maps the original-layout keys back
     to exactly the diffusers state dict, and that every written file loads back finite.

Inputs and outputs are stored WITHOUT the batch dimension:
  latent [C, F, H, W], context [L, text_dim], timestep [1], velocity [C, F, H, W].

Run from the repository root:  python tools/make_dit_goldens.py
"""

import copy
import json
import math
import shutil

import torch
from diffusers import WanTransformer3DModel
from diffusers.utils import logging as diffusers_logging
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

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

OUT_ROOT = GOLDENS / "dit"

# Two configurations. "tiny" keeps the real model's structure (freq_dim 256, 512 context rows of
# which only the first few are non-zero, as the pipeline pads the text encoder output). "heads3"
# changes every size that a port might hard-code: 3 heads of 16 (RoPE split 8/4/4 instead of
# 8/8/8), ffn 80, text_dim 24, freq_dim 64, a 24-row context that is not padded to 512, another
# latent shape, and half-precision sharded weights.
CONFIGS = {
    "tiny": {
        "seed": 2101,
        "model": dict(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=24,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=64,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        "latent_shape": (16, 3, 6, 10),  # C, F, H, W (H and W even for the 2x2 patch)
        "timestep": 637.5,
        "context_rows": 512,  # rows fed to the model
        "context_nonzero_rows": 7,  # rows 7..511 are zeros, as after the pipeline's padding
        # Full original config (every WanModel.__init__ argument).
        "original_config_style": "full",
        # Extra copies: (layout, dtype, sharded?)
        "copies": [("original", torch.float32, False), ("comfyui", torch.bfloat16, False)],
    },
    "heads3": {
        "seed": 2102,
        "model": dict(
            patch_size=(1, 2, 2),
            num_attention_heads=3,
            attention_head_dim=16,
            in_channels=16,
            out_channels=16,
            text_dim=24,
            freq_dim=64,
            ffn_dim=80,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        "latent_shape": (16, 5, 4, 8),
        "timestep": 999.0,
        "context_rows": 24,
        "context_nonzero_rows": 24,
        # Only the fields the published Wan2.1 config.json files carry (no text_dim, patch_size,
        # window_size, qk_norm, cross_attn_norm): a loader must take text_dim from the weights.
        "original_config_style": "published",
        "copies": [("original", torch.float16, True)],
    },
}


# --------------------------------------------------------------------------------------------
# Random parameters
# --------------------------------------------------------------------------------------------

def randomize_parameters(model, gen):
    """Overwrite every parameter with seeded random values.

    Linear/conv weights: normal with std = gain / sqrt(fan_in), so activations stay O(1).
    Biases: normal, std 0.1.  Norm gains: uniform in [0.6, 1.4].  Scale-shift tables: normal, std 0.3.
    The time projection (which produces the modulation) gets gain 0.5 to keep (1 + scale) moderate.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif ".norm" in name and name.endswith(".weight"):
                # attn*.norm_q / norm_k (RMSNorm over all heads) and norm2 (affine LayerNorm)
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith(".weight"):
                fan_in = p[0].numel()
                gain = 0.5 if "time_proj" in name else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"parameter {name} has no initialisation rule")


# --------------------------------------------------------------------------------------------
# Key layouts
# --------------------------------------------------------------------------------------------

_EMBEDDER_KEYS = {
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
}

_BLOCK_PARTS = {
    "attn1.to_q.": "self_attn.q.",
    "attn1.to_k.": "self_attn.k.",
    "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.",
    "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.",
    "attn2.to_k.": "cross_attn.k.",
    "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.",
    "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.",
    # The affine LayerNorm before cross-attention is norm2 in diffusers and norm3 in the original.
    "norm2.": "norm3.",
    "ffn.net.0.proj.": "ffn.0.",
    "ffn.net.2.": "ffn.2.",
}


def diffusers_key_to_original(key):
    """Map one diffusers WanTransformer3DModel key to the Wan2.1 repository's name."""
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return "head.head." + key[len("proj_out."):]
    if key.startswith("patch_embedding."):
        return key
    for src, dst in _EMBEDDER_KEYS.items():
        if key.startswith(src):
            return dst + key[len(src):]
    if key.startswith("blocks."):
        _, index, rest = key.split(".", 2)
        if rest == "scale_shift_table":
            return f"blocks.{index}.modulation"
        for src, dst in _BLOCK_PARTS.items():
            if rest.startswith(src):
                return f"blocks.{index}.{dst}{rest[len(src):]}"
    raise KeyError(f"no original name for diffusers key {key}")


def to_original_layout(state_dict):
    return {diffusers_key_to_original(k): v for k, v in state_dict.items()}


def original_config(cfg, style):
    m = cfg["model"]
    dim = m["num_attention_heads"] * m["attention_head_dim"]
    conf = {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "text_len": cfg["context_rows"],
        "in_dim": m["in_channels"],
        "dim": dim,
        "ffn_dim": m["ffn_dim"],
        "freq_dim": m["freq_dim"],
        "out_dim": m["out_channels"],
        "num_heads": m["num_attention_heads"],
        "num_layers": m["num_layers"],
        "eps": m["eps"],
    }
    if style == "full":
        conf.update(
            {
                "patch_size": list(m["patch_size"]),
                "text_dim": m["text_dim"],
                "window_size": [-1, -1],
                "qk_norm": True,
                "cross_attn_norm": m["cross_attn_norm"],
            }
        )
    return conf


# --------------------------------------------------------------------------------------------
# Forward pass with recorded intermediates
# --------------------------------------------------------------------------------------------

def forward_with_intermediates(model, latent, timestep, context):
    """Run the model (batch 1) and collect intermediate tensors through forward hooks."""
    rec = {}
    hooks = []

    def keep(name, fn=lambda out: out):
        def hook(_module, _inputs, output):
            rec[name] = fn(output).detach().clone()

        return hook

    ce = model.condition_embedder
    hooks.append(model.rope.register_forward_hook(
        lambda _m, _i, out: rec.update(rope_cos=out[0][0, :, 0].clone(), rope_sin=out[1][0, :, 0].clone())))
    hooks.append(ce.timesteps_proj.register_forward_hook(keep("time_sinusoid", lambda o: o[0])))
    hooks.append(ce.time_embedder.register_forward_hook(keep("temb", lambda o: o[0])))
    hooks.append(ce.time_proj.register_forward_hook(keep("timestep_proj", lambda o: o[0].unflatten(0, (6, -1)))))
    hooks.append(ce.text_embedder.register_forward_hook(keep("context_embedded", lambda o: o[0])))
    hooks.append(model.patch_embedding.register_forward_hook(
        keep("patch_tokens", lambda o: o[0].flatten(1).transpose(0, 1))))
    b0 = model.blocks[0]
    hooks.append(b0.attn1.register_forward_hook(keep("block0_self_attn_out", lambda o: o[0])))
    hooks.append(b0.attn2.register_forward_hook(keep("block0_cross_attn_out", lambda o: o[0])))
    hooks.append(b0.ffn.register_forward_hook(keep("block0_ffn_out", lambda o: o[0])))
    for i, block in enumerate(model.blocks):
        hooks.append(block.register_forward_hook(keep(f"block{i}_out", lambda o: o[0])))
    hooks.append(model.proj_out.register_forward_hook(keep("head_out", lambda o: o[0])))

    try:
        with torch.no_grad():
            out = model(
                hidden_states=latent[None],
                timestep=timestep,
                encoder_hidden_states=context[None],
                return_dict=False,
            )[0][0]
    finally:
        for h in hooks:
            h.remove()
    return out, rec


def run_with_weights(model, state_dict, latent, timestep, context, dtype=torch.float32):
    """Forward pass of a copy of `model` carrying `state_dict`, computed in `dtype`."""
    m = copy.deepcopy(model)
    m.load_state_dict(state_dict)
    m = m.to(dtype)
    with torch.no_grad():
        out = m(
            hidden_states=latent[None].to(dtype),
            timestep=timestep,
            encoder_hidden_states=context[None].to(dtype),
            return_dict=False,
        )[0][0]
    return out.float()


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def write_comfyui(out_dir, name, state_dict, dtype):
    """ComfyUI style: original names prefixed with model.diffusion_model., one file, no config."""
    tensors = {"model.diffusion_model." + k: v.to(dtype) for k, v in to_original_layout(state_dict).items()}
    path = out_dir / f"wan2.1_t2v_{name}_{dtype_name(dtype)}.safetensors"
    return [(path, save_tensors(path, tensors, dtype=dtype, list_tensors=False))]


def write_original(out_dir, state_dict, conf, dtype, sharded):
    """The Wan2.1 repository's layout: config.json plus one file or two shards with an index."""
    tensors = {k: v.to(dtype) for k, v in to_original_layout(state_dict).items()}
    save_json(out_dir / "config.json", conf)
    if not sharded:
        path = out_dir / "diffusion_pytorch_model.safetensors"
        return [(path, save_tensors(path, tensors, dtype=dtype, list_tensors=False))]
    # Two shards split in sorted key order, plus the index file in the format transformers and
    # diffusers use for sharded checkpoints.
    keys = sorted(tensors)
    half = len(keys) // 2
    shards = [keys[:half], keys[half:]]
    written = []
    weight_map = {}
    total = 0
    for i, shard_keys in enumerate(shards):
        fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        part = {k: tensors[k] for k in shard_keys}
        written.append((out_dir / fname, save_tensors(out_dir / fname, part, dtype=dtype, list_tensors=False)))
        for k in shard_keys:
            weight_map[k] = fname
            total += tensors[k].numel() * tensors[k].element_size()
    save_json(
        out_dir / "diffusion_pytorch_model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    return written


def make_config(name, cfg):
    print(f"\n=== DiT golden '{name}' ===")
    gen = torch.Generator().manual_seed(cfg["seed"])
    out_dir = OUT_ROOT / name
    shutil.rmtree(out_dir, ignore_errors=True)  # no stale files from an earlier run

    model = WanTransformer3DModel(**cfg["model"]).eval()
    randomize_parameters(model, gen)
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # Inputs
    latent = torch.randn(cfg["latent_shape"], generator=gen)
    context = torch.zeros(cfg["context_rows"], cfg["model"]["text_dim"])
    n = cfg["context_nonzero_rows"]
    context[:n] = torch.randn(n, cfg["model"]["text_dim"], generator=gen)
    timestep = torch.tensor([cfg["timestep"]], dtype=torch.float32)

    velocity, inter = forward_with_intermediates(model, latent, timestep, context)
    assert velocity.shape == latent.shape

    # How well-conditioned is this golden? The same forward in float64 should be very close.
    velocity_f64 = run_with_weights(model, state_dict, latent, timestep, context, dtype=torch.float64)
    cond = rel_l2(velocity, velocity_f64)
    print(f"  relative L2 of the float32 forward against float64: {cond:.3e}")
    assert cond < 1e-5, "golden is too sensitive to rounding"

    # 1. diffusers layout, exactly as save_pretrained writes it.
    diff_dir = out_dir / "diffusers"
    model.save_pretrained(diff_dir, safe_serialization=True)
    print(f"  wrote {rel(diff_dir / 'config.json')}")
    print(f"  wrote {rel(diff_dir / 'diffusion_pytorch_model.safetensors')}")
    check_roundtrip(diff_dir / "diffusion_pytorch_model.safetensors", state_dict)

    # 2. The original layout must convert back to exactly the diffusers state dict with
    #    diffusers' own single-file converter (the reference for the key mapping).
    original = to_original_layout(state_dict)
    back = convert_wan_transformer_to_diffusers(dict(original))
    assert set(back) == set(state_dict), "original -> diffusers key mapping is not a bijection"
    for k in state_dict:
        assert torch.equal(back[k], state_dict[k]), k
    prefixed = {"model.diffusion_model." + k: v for k, v in original.items()}
    back = convert_wan_transformer_to_diffusers(dict(prefixed))
    assert set(back) == set(state_dict)

    # 3. Other layouts and dtypes. A copy stored in float16/bfloat16 gets its own expected output:
    #    diffusers run in float32 on the weights rounded to that dtype.
    conf = original_config(cfg, cfg["original_config_style"])
    io = {"latent": latent, "timestep": timestep, "context": context, "velocity": velocity}
    for layout, dtype, sharded in cfg["copies"]:
        if layout == "original":
            sub = "original" if dtype == torch.float32 else f"original_{dtype_name(dtype)}"
            if sharded:
                sub += "_sharded"
            files = write_original(out_dir / sub, state_dict, conf, dtype, sharded)
        elif layout == "comfyui":
            files = write_comfyui(out_dir / "comfyui", name, state_dict, dtype)
        else:
            raise ValueError(layout)
        for path, tensors in files:
            check_roundtrip(path, tensors)
        if dtype != torch.float32:
            rounded = {k: v.to(dtype).to(torch.float32) for k, v in state_dict.items()}
            v_rounded = run_with_weights(model, rounded, latent, timestep, context)
            key = f"velocity_{dtype_name(dtype)}_weights"
            io[key] = v_rounded
            print(f"  {key}: relative L2 against the float32-weight velocity {rel_l2(v_rounded, velocity):.3e}")

    # 4. Inputs, outputs and intermediates.
    # One metadata entry only: safetensors writes the metadata map in no fixed order.
    meta = {"generator": f"tools/make_dit_goldens.py, configuration {name}"}
    written = save_tensors(out_dir / "io.safetensors", io, metadata=meta)
    check_roundtrip(out_dir / "io.safetensors", written)
    written = save_tensors(out_dir / "intermediates.safetensors", inter, metadata=meta)
    check_roundtrip(out_dir / "intermediates.safetensors", written)

    # Sanity: the stored velocity is reproducible from the stored diffusers folder. (Not bit for
    # bit: from_pretrained's memory-mapped weights take other vectorised paths in the matmuls.)
    reloaded = WanTransformer3DModel.from_pretrained(diff_dir).eval()
    with torch.no_grad():
        again = reloaded(latent[None], timestep, context[None], return_dict=False)[0][0]
    err = rel_l2(again, velocity)
    print(f"  velocity from the reloaded diffusers folder: relative L2 {err:.3e}")
    assert err < 1e-6, "reloaded diffusers folder gives a different velocity"

    return {
        "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg["model"].items()},
        "latent_shape": list(cfg["latent_shape"]),
        "timestep": cfg["timestep"],
        "context_rows": cfg["context_rows"],
        "context_nonzero_rows": cfg["context_nonzero_rows"],
        "seed": cfg["seed"],
        "tokens": int(math.prod(s // p for s, p in zip(cfg["latent_shape"][1:], cfg["model"]["patch_size"]))),
        "float32_vs_float64_rel_l2": cond,
    }


def main():
    setup_torch()
    # Quiet diffusers' advice about casting to float64 (done on purpose for the conditioning check).
    diffusers_logging.set_verbosity_error()
    print("versions:", json.dumps(versions()))
    summary = {"versions": versions()}
    for name, cfg in CONFIGS.items():
        summary[name] = make_config(name, cfg)
    save_json(OUT_ROOT / "goldens.json", summary)


if __name__ == "__main__":
    main()
