"""diffusers' WanTransformer3DModel beside `vdit` on the same GPU, with the same random weights.

Usage (on the GPU machine, diffusers importable):
  python3 bench/torch_dit.py --out DIR [--latent 21x60x104] [--vdit target/release/vdit]
Builds the Wan2.1 T2V 1.3B transformer with seeded random weights, saves it (diffusers layout)
and one input (latent, timestep, context) under DIR, times diffusers' forward in bf16 and fp16
(CUDA events, median) with the peak memory, computes the fp32 (TF32 off) output as the
reference, then runs `vdit dit-forward` on the saved weights and reports its relative L2 error
against that reference. Writes DIR/torch_dit.json.

  python3 bench/torch_dit.py --out DIR --config 14b --reference-only
times the 14B config's bf16 forward and peak memory alone (weights made on the GPU in bf16, no
fp32 reference, no vdit run): the row beside `vdit bench dit --config wan2.1-t2v-14b`.
"""
import argparse
import json
import os
import subprocess
import time

import torch
from safetensors.torch import load_file, save_file


def median_ms(fn, warmup=1, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


SIZES = {
    "1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}


def reference_only(args):
    from diffusers import WanTransformer3DModel

    f, h, w = (int(v) for v in args.latent.split("x"))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=1e-6, **SIZES[args.config],
        ).to(torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
    x = torch.randn(1, 16, f, h, w, device="cuda", dtype=torch.bfloat16)
    c = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16) * 0.2
    t = torch.tensor([args.timestep], device="cuda")
    result = {"config": args.config, "latent": [16, f, h, w], "tokens": f * (h // 2) * (w // 2),
              "weights_gb": sum(p.numel() * 2 for p in model.parameters()) / 1e9}
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        result["bf16_ms"] = median_ms(lambda: model(x, t, c, return_dict=False), warmup=1, reps=3)
    result["bf16_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(result, indent=1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "torch_dit.json"), "w") as fh:
        json.dump(result, fh, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--latent", default="21x60x104")
    ap.add_argument("--vdit", default="target/release/vdit")
    ap.add_argument("--timestep", type=float, default=500.0)
    ap.add_argument("--vdit-precisions", default="f16,f32")
    ap.add_argument("--config", choices=["1.3b", "14b"], default="1.3b")
    ap.add_argument("--reference-only", action="store_true",
                    help="time diffusers bf16 only (the 14B does not need a saved copy)")
    args = ap.parse_args()
    if args.reference_only:
        reference_only(args)
        return
    from diffusers import WanTransformer3DModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    f, h, w = (int(v) for v in args.latent.split("x"))
    os.makedirs(args.out, exist_ok=True)
    model_dir = os.path.join(args.out, "wan13b-random")
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
    )
    with torch.no_grad():  # default init leaves zeros; every tensor random makes a fairer test
        for name, p in model.named_parameters():
            if "scale_shift_table" in name:
                p.normal_(0.0, 0.1)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.normal_(0.0, fan_in ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.05)
            else:
                p.normal_(0.0, 0.05)
    t0 = time.time()
    model.save_pretrained(model_dir, safe_serialization=True, max_shard_size="20GB")
    print(f"saved random weights in {time.time() - t0:.0f} s")
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(16, f, h, w, generator=gen)
    context = torch.randn(512, 4096, generator=gen) * 0.2
    inputs = os.path.join(args.out, "inputs.safetensors")
    save_file({"latent": latent, "context": context}, inputs)
    result = {"latent": [16, f, h, w], "tokens": f * (h // 2) * (w // 2)}
    model = model.cuda().eval()
    x = latent[None].cuda()
    t = torch.tensor([args.timestep], device="cuda")
    c = context[None].cuda()
    with torch.no_grad():
        ref = model(x, t, c, return_dict=False)[0][0].float().cpu()
        result["fp32_ms"] = median_ms(lambda: model(x, t, c, return_dict=False), warmup=1, reps=2)
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
            m = model.to(dtype)
            torch.cuda.reset_peak_memory_stats()
            result[f"{name}_ms"] = median_ms(lambda: m(x.to(dtype), t, c.to(dtype), return_dict=False))
            result[f"{name}_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            out = m(x.to(dtype), t, c.to(dtype), return_dict=False)[0][0].float().cpu()
            result[f"{name}_vs_fp32_rel_l2"] = float((out - ref).norm() / ref.norm())
            model = m.float()
    del model
    torch.cuda.empty_cache()
    for precision in args.vdit_precisions.split(","):
        out_path = os.path.join(args.out, f"vdit_velocity_{precision}.safetensors")
        cmd = [args.vdit, "dit-forward", "--model", model_dir, "--latent", inputs, "--context", inputs,
               "--timestep", str(args.timestep), "--output", out_path, "--precision", precision]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result[f"vdit_{precision}_run_s"] = time.time() - t0
        if proc.returncode != 0:
            result[f"vdit_{precision}_error"] = proc.stderr[-2000:]
            continue
        got = load_file(out_path)["velocity"]
        result[f"vdit_{precision}_vs_fp32_rel_l2"] = float((got - ref).norm() / ref.norm())
    print(json.dumps(result, indent=1))
    with open(os.path.join(args.out, "torch_dit.json"), "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
