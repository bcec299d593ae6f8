"""PyTorch reference timings of the matmuls `vdit bench kernels` runs (same shapes, same GPU).

Usage: python3 bench/torch_matmul.py [--tokens 32760] [--json FILE]
Times Y = X W^T + b with CUDA events (median of repeats after warm-up), in fp32 without TF32,
fp16 and bf16.
"""
import argparse
import json

import torch


def time_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32760)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--ffn", type=int, default=8960)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n, d, f = args.tokens, args.dim, args.ffn
    shapes = [("qkv/out", n, d, d), ("ffn-up", n, f, d), ("ffn-down", n, d, f)]
    rows = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for name, m, nn, k in shapes:
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            w = torch.randn(nn, k, device="cuda", dtype=dtype) * k ** -0.5
            b = torch.randn(nn, device="cuda", dtype=dtype)
            ms = time_ms(lambda: torch.nn.functional.linear(x, w, b))
            tflops = 2 * m * nn * k / ms / 1e9
            rows.append({"op": f"linear {name} {m}x{nn}x{k}", "dtype": str(dtype).replace("torch.", ""),
                         "ms": ms, "tflops": tflops})
            print(f"{rows[-1]['op']:<36} {rows[-1]['dtype']:<9} {ms:9.3f} ms {tflops:8.1f} TFLOP/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
