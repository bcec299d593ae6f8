"""diffusers' AutoencoderKLWan decoder beside `vdit vae-decode`, same random weights, same GPU.

Usage: python3 bench/torch_vae.py --out DIR [--latent 21x60x104] [--vdit target/release/vdit]
Builds the Wan2.1 VAE (default config) with seeded random weights, saves it, decodes one
normalised latent with diffusers in bf16 and fp32 (TF32 off; CUDA events, peak memory), then
runs `vdit vae-decode` on the saved weights and reports its time (from its log), its peak
tensor memory and its relative L2 error against the fp32 frames. Writes DIR/torch_vae.json.
"""
import argparse
import json
import os
import re
import subprocess
import time

import torch
from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--latent", default="21x60x104")
    ap.add_argument("--vdit", default="target/release/vdit")
    ap.add_argument("--precision", default="f16")
    args = ap.parse_args()
    from diffusers import AutoencoderKLWan

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    f, h, w = (int(v) for v in args.latent.split("x"))
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    vae = AutoencoderKLWan()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "gamma" in name:
                p.normal_(1.0, 0.05)
            elif p.dim() > 1:
                p.normal_(0.0, p[0].numel() ** -0.5)
            else:
                p.normal_(0.0, 0.02)
    model_dir = os.path.join(args.out, "vae")
    vae.save_pretrained(model_dir)
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(16, f, h, w, generator=gen)
    latent_path = os.path.join(args.out, "latent.safetensors")
    save_file({"latent": latent}, latent_path)
    mean = torch.tensor(vae.config.latents_mean).view(16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(16, 1, 1, 1)
    z = (latent * std + mean)[None].cuda()
    vae = vae.cuda().eval()
    result = {"latent": [16, f, h, w]}

    def timed(model, x):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = model.decode(x, return_dict=False)[0]
        b.record()
        b.synchronize()
        return out, a.elapsed_time(b), torch.cuda.max_memory_allocated() / 1e9

    with torch.no_grad():
        ref, result["fp32_ms"], result["fp32_peak_gb"] = timed(vae, z)
        ref = ref[0].float().cpu()
        vb = vae.to(torch.bfloat16)
        timed(vb, z.to(torch.bfloat16))  # warm-up
        out, result["bf16_ms"], result["bf16_peak_gb"] = timed(vb, z.to(torch.bfloat16))
        result["bf16_vs_fp32_rel_l2"] = float((out[0].float().cpu() - ref).norm() / ref.norm())
    del vae, vb
    torch.cuda.empty_cache()
    out_path = os.path.join(args.out, "vdit_frames.safetensors")
    cmd = [args.vdit, "vae-decode", "--model", model_dir, "--latent", latent_path, "--output", out_path,
           "--precision", args.precision]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RUST_LOG": "vdit=info"})
    result["vdit_run_s"] = time.time() - t0
    m = re.search(r"vae decode: ([0-9.]+) ms, GPU tensors at peak ([0-9.]+) GiB", proc.stderr)
    if m:
        result["vdit_ms"], result["vdit_peak_gib"] = float(m.group(1)), float(m.group(2))
    if proc.returncode != 0:
        result["vdit_error"] = proc.stderr[-2000:]
    else:
        got = load_file(out_path)["frames"]
        result["vdit_vs_fp32_rel_l2"] = float((got - ref).norm() / ref.norm())
    print(json.dumps(result, indent=1))
    with open(os.path.join(args.out, "torch_vae.json"), "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
