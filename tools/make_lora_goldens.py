#!/usr/bin/env python3
"""Goldens for vdit's LoRA merging, produced by diffusers' `load_lora_weights` + `fuse_lora`
(PEFT underneath) on the tiny DiT golden (dit/tiny, made by make_dit_goldens.py).

Writes assets/goldens/lora/:
  kohya_r4.safetensors
      musubi-tuner / kohya form: `lora_unet_blocks_N_self_attn_q.lora_down.weight` [r, in],
      `.lora_up.weight` [out, r] and an integer `.alpha` (I64, shape []) for every projection
      and both FFN linears of every block. Rank 4, alpha 8: scale alpha / rank = 2.
  peft_r3.safetensors
      diffusers / PEFT form: `transformer.<diffusers module>.lora_A.weight` / `lora_B.weight`
      on a subset of the modules (some attention projections, one FFN linear, `proj_out`,
      `condition_embedder.time_proj` and the text embedder), no alpha: scale 1.
  original_r2.safetensors
      The Wan repository's names under `diffusion_model.` (the form of the step-distilled
      LoRAs): `lora_down` / `lora_up` with a float `alpha` (rank 2, alpha 1: scale 0.5),
      `diff_b` bias deltas on some linears, and full `diff` deltas on norm gains (the
      cross-attention LayerNorm's and the q/k RMSNorms') and on one linear weight.
  velocities.safetensors
      The velocity of the tiny DiT on dit/tiny/io.safetensors' inputs after merging, per case:
        kohya             kohya_r4 at strength 0.8
        peft              peft_r3 at strength 1.0
        original          original_r2 at strength 0.6
        kohya_and_peft    kohya_r4 at 0.8 and peft_r3 at 1.3, both merged
        kohya_zero        kohya_r4 at strength 0 (equals the base model's velocity)
  goldens.json
      The cases, the versions that made them.

diffusers merges `lora_down`/`lora_up`/`alpha` and `diff_b` itself; it drops `diff` keys (it takes
norm diffs to be zeros). Full deltas are therefore added by this script to the base weights,
strength x diff, as ComfyUI applies them, before diffusers merges the rest.

Run from the repository root:  python tools/make_lora_goldens.py
"""

import json
import shutil

import torch
from diffusers import WanPipeline, WanTransformer3DModel
from safetensors.torch import load_file, save_file

from golden_utils import GOLDENS, rel, rel_l2, save_json, save_tensors, setup_torch, versions
from make_dit_goldens import diffusers_key_to_original

OUT = GOLDENS / "lora"
TINY = GOLDENS / "dit" / "tiny"
SEED = 3101


def linear_modules(model):
    """(diffusers module name, out, in) of every nn.Linear of the DiT."""
    return [
        (name, m.out_features, m.in_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]


def pair(gen, out, inp, rank):
    """A (down [rank, in], up [out, rank]) pair large enough to move the output visibly."""
    down = torch.randn(rank, inp, generator=gen) / inp**0.5
    up = torch.randn(out, rank, generator=gen) * 0.3 / rank**0.5
    return down, up


def original_module(diffusers_module):
    return diffusers_key_to_original(diffusers_module + ".weight").removesuffix(".weight")


def make_kohya(model, gen):
    tensors = {}
    for name, out, inp in linear_modules(model):
        if not name.startswith("blocks."):
            continue
        down, up = pair(gen, out, inp, 4)
        key = "lora_unet_" + original_module(name).replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(8, dtype=torch.int64)
    return tensors


PEFT_MODULES = [
    "blocks.0.attn1.to_q",
    "blocks.0.attn1.to_v",
    "blocks.1.attn1.to_out.0",
    "blocks.1.attn2.to_k",
    "blocks.0.ffn.net.0.proj",
    "proj_out",
    "condition_embedder.time_proj",
    "condition_embedder.text_embedder.linear_1",
]


def make_peft(model, gen):
    shapes = {name: (out, inp) for name, out, inp in linear_modules(model)}
    tensors = {}
    for name in PEFT_MODULES:
        out, inp = shapes[name]
        down, up = pair(gen, out, inp, 3)
        tensors[f"transformer.{name}.lora_A.weight"] = down
        tensors[f"transformer.{name}.lora_B.weight"] = up
    return tensors


def make_original(model, gen):
    params = dict(model.named_parameters())
    tensors = {}
    for name, out, inp in linear_modules(model):
        if not name.startswith("blocks."):
            continue
        down, up = pair(gen, out, inp, 2)
        key = "diffusion_model." + original_module(name)
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(1.0)
        if name.endswith(("attn1.to_q", "ffn.net.0.proj", "attn2.to_out.0")):
            tensors[f"{key}.diff_b"] = torch.randn(out, generator=gen) * 0.1
    # Full deltas: norm gains and one whole linear weight.
    for name in ["blocks.0.norm2.weight", "blocks.1.attn1.norm_q.weight", "blocks.0.attn2.norm_k.weight", "blocks.1.ffn.net.2.weight"]:
        shape = params[name].shape
        tensors["diffusion_model." + diffusers_key_to_original(name).removesuffix(".weight") + ".diff"] = (
            torch.randn(shape, generator=gen) * 0.05
        )
    return tensors


def merge(base_dir, loras):
    """The tiny DiT with `loras` [(path, strength)] merged: diffs by hand, the rest by diffusers."""
    model = WanTransformer3DModel.from_pretrained(base_dir).eval()
    original_to_param = {diffusers_key_to_original(k): k for k, _ in model.named_parameters()}
    params = dict(model.named_parameters())
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=model, vae=None, scheduler=None)
    names, weights = [], []
    for i, (path, strength) in enumerate(loras):
        state = load_file(str(path))
        diffs = {k: v for k, v in state.items() if k.endswith(".diff")}
        with torch.no_grad():
            for key, delta in diffs.items():
                original = key.removeprefix("diffusion_model.").removesuffix(".diff") + ".weight"
                params[original_to_param[original]].add_(strength * delta)
        rest = {k: v for k, v in state.items() if k not in diffs}
        name = f"lora{i}"
        pipe.load_lora_weights(rest, adapter_name=name)
        names.append(name)
        weights.append(strength)
    pipe.set_adapters(names, adapter_weights=weights)
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=names)
    pipe.unload_lora_weights()
    return model


def merge_by_hand(base_dir, loras):
    """The same merge written out: W += s * alpha / rank * up @ down, b += s * diff_b, w += s * diff.

    Only a cross-check of diffusers' result (its missing-bias warnings included)."""
    model = WanTransformer3DModel.from_pretrained(base_dir).eval()
    params = dict(model.named_parameters())
    to_param = {diffusers_key_to_original(k): k for k in params}
    to_param |= {k: k for k in params}

    def target(module, suffix):
        module = module.removeprefix("diffusion_model.").removeprefix("transformer.")
        if module.startswith("lora_unet_"):
            flat = {k.removesuffix(".weight").replace(".", "_"): k for k in to_param if k.endswith(".weight")}
            module = flat[module.removeprefix("lora_unet_")].removesuffix(".weight")
        return params[to_param[f"{module}.{suffix}"]]

    with torch.no_grad():
        for path, s in loras:
            state = load_file(str(path))
            for key, t in state.items():
                for down_name, up_name in [("lora_down", "lora_up"), ("lora_A", "lora_B")]:
                    if key.endswith(f".{down_name}.weight"):
                        module = key.removesuffix(f".{down_name}.weight")
                        up = state[f"{module}.{up_name}.weight"].double()
                        alpha = state.get(f"{module}.alpha")
                        scale = 1.0 if alpha is None else float(alpha) / t.shape[0]
                        target(module, "weight").add_((s * scale * up @ t.double()).float())
                if key.endswith(".diff_b"):
                    target(key.removesuffix(".diff_b"), "bias").add_(s * t)
                if key.endswith(".diff"):
                    target(key.removesuffix(".diff"), "weight").add_(s * t)
    return model


def velocity(model, io):
    with torch.no_grad():
        return model(
            hidden_states=io["latent"][None],
            timestep=io["timestep"],
            encoder_hidden_states=io["context"][None],
            return_dict=False,
        )[0][0]


def main():
    setup_torch()
    gen = torch.Generator().manual_seed(SEED)
    base_dir = TINY / "diffusers"
    io = load_file(str(TINY / "io.safetensors"))
    base = WanTransformer3DModel.from_pretrained(base_dir).eval()

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    files = {
        "kohya_r4": make_kohya(base, gen),
        "peft_r3": make_peft(base, gen),
        "original_r2": make_original(base, gen),
    }
    paths = {}
    for name, tensors in files.items():
        paths[name] = OUT / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(paths[name]))
        print(f"  wrote {rel(paths[name])} ({len(tensors)} tensors)")

    cases = {
        "kohya": [("kohya_r4", 0.8)],
        "peft": [("peft_r3", 1.0)],
        "original": [("original_r2", 0.6)],
        "kohya_and_peft": [("kohya_r4", 0.8), ("peft_r3", 1.3)],
        "kohya_zero": [("kohya_r4", 0.0)],
    }
    base_velocity = velocity(base, io)
    assert rel_l2(base_velocity, io["velocity"]) < 1e-6, "the base model does not reproduce dit/tiny"
    out = {}
    for case, loras in cases.items():
        model = merge(base_dir, [(paths[f], s) for f, s in loras])
        v = velocity(model, io)
        by_hand = rel_l2(velocity(merge_by_hand(base_dir, [(paths[f], s) for f, s in loras]), io), v)
        print(f"  {case}: relative L2 between diffusers' merge and the merge by hand {by_hand:.3e}")
        assert by_hand < 1e-5, f"{case}: diffusers' merge differs from the merge by hand"
        change = rel_l2(v, base_velocity)
        print(f"  {case}: relative L2 change from the base velocity {change:.3e}")
        if case == "kohya_zero":
            assert change < 1e-6, "strength 0 changed the model"
        else:
            assert change > 0.05, f"{case}: the LoRA barely changes the velocity"
        out[case] = v
    save_tensors(OUT / "velocities.safetensors", out, metadata={"generator": "tools/make_lora_goldens.py"})
    save_json(
        OUT / "goldens.json",
        {
            "base": "dit/tiny/diffusers",
            "inputs": "dit/tiny/io.safetensors",
            "cases": {c: [{"file": f"{f}.safetensors", "strength": s} for f, s in l] for c, l in cases.items()},
            "versions": versions() | {"peft": __import__("peft").__version__},
        },
    )


if __name__ == "__main__":
    main()
