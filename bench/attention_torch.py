#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention timings for the shapes of `vdit bench attention`.

Times SDPA (softmax attention, the reference the wgpu kernels are compared with) with CUDA
events, median over iterations, for bf16 and fp32, and prints a table:

    python bench/attention_torch.py --tokens 4096,8192,16384,32760,65536 --heads 12 --head-dim 128

FLOPs follow the attention cost model (ARCHITECTURE.md): 4 N^2 D per head for softmax.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def time_sdpa(n, nk, heads, d, dtype, iters, warmup):
    gen = torch.Generator(device="cuda").manual_seed(0)
    # [B, H, N, D], the layout SDPA wants; the DiT's [N, H, D] transposes into it for free.
    q = torch.randn(1, heads, n, d, device="cuda", dtype=dtype, generator=gen)
    k = torch.randn(1, heads, nk, d, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn(1, heads, nk, d, device="cuda", dtype=dtype, generator=gen)
    for _ in range(warmup):
        F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        F.scaled_dot_product_attention(q, k, v)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    del q, k, v
    torch.cuda.empty_cache()
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="32760", help="comma list of query (and key) lengths")
    ap.add_argument("--kv-tokens", type=int, default=None, help="key length when it differs (cross-attention)")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--precision", default="bf16,fp32", help="comma list of bf16, fp16, fp32")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__} | {torch.cuda.get_device_name()} | SDPA | "
          f"{args.heads} heads x {args.head_dim}")
    print(f"{'precision':>9} {'tokens':>8} {'median ms':>10} {'min ms':>10} {'TFLOP/s':>9}")
    rows = []
    for prec in args.precision.split(","):
        for n in [int(t) for t in args.tokens.split(",")]:
            nk = args.kv_tokens or n
            med, low = time_sdpa(n, nk, args.heads, args.head_dim, dtypes[prec], args.iters, args.warmup)
            flops = 4.0 * n * nk * args.head_dim * args.heads
            tflops = flops / (med * 1e-3) / 1e12
            print(f"{prec:>9} {n:>8} {med:>10.3f} {low:>10.3f} {tflops:>9.1f}")
            rows.append({"precision": prec, "tokens": n, "kv_tokens": nk, "median_ms": med,
                         "min_ms": low, "tflops": tflops})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "heads": args.heads, "head_dim": args.head_dim, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
