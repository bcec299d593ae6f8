"""Builds bench/RESULTS.md from the JSON files the GPU runs leave in bench/results/.

Usage: python3 bench/make_results.py
Inputs (written by `vdit bench ... --json` and the PyTorch scripts in bench/, run in one
command on the same GPU): h100_info.txt, h100_kernels.json, h100_torch_matmul.json,
h100_dit_{softmax,hybrid,linear}.json, h100_torch_dit.json, and attention_h100.md beside this file.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RES = os.path.join(HERE, "results")


def load(name):
    path = os.path.join(RES, name)
    return json.load(open(path)) if os.path.exists(path) else None


def main():
    out = ["# vdit speed on an NVIDIA H100 80GB, beside PyTorch on the same GPU", ""]
    info = open(os.path.join(RES, "h100_info.txt")).read().splitlines()
    out += ["Device and driver: `" + info[0] + "`; wgpu 30 on Vulkan. Measured 2026-11-23.", ""]
    out += ["Regenerate: run the commands of `bench/README.md` on the GPU machine, copy the JSON files into",
            "`bench/results/`, then `python3 bench/make_results.py`.", ""]
    kernels = load("h100_kernels.json")
    torch_mm = load("h100_torch_matmul.json")
    dit = {m: load(f"h100_dit_{m}.json") for m in ("softmax", "hybrid", "linear")}
    tdit = load("h100_torch_dit.json")

    def k_ms(label):
        for k in kernels["kernels"]:
            if k["label"] == label:
                return k["mean_ms"]
        return None

    def t_ms(op, dtype):
        for r in torch_mm["rows"]:
            if r["op"].startswith(op) and r["dtype"] == dtype:
                return r["ms"]
        return None

    rows = []
    up16 = k_ms("matmul+gelu 32760x8960x1536 f16")
    up32 = k_ms("matmul+gelu 32760x8960x1536 f32")
    rows.append(("matmul 32760x8960x1536, f16 in, f32 acc (portable tiled kernel; no cooperative matrices yet)",
                 up16, "cuBLAS fp16", t_ms("linear ffn-up", "float16"), "<= 2.0"))
    rows.append(("same, portable f32 path", up32, "cuBLAS fp32 no-TF32", t_ms("linear ffn-up", "float32"), "<= 1.25"))
    att = None
    for k in dit["softmax"]["kernels"]:
        if k["label"].startswith("attention softmax 32760q x 32760k"):
            att = k["mean_ms"]
    rows.append(("softmax attention 12x128, N=32760, f16", att, "SDPA bf16 (attention_h100.md)", 11.09, "<= 2.5"))
    bf16 = tdit["bf16_ms"]
    rows.append(("Wan2.1 1.3B DiT forward, 32760 tokens, softmax", dit["softmax"]["median_ms"], "diffusers bf16", bf16, "<= 1.5"))
    rows.append(("same, hybrid R=2 on 15 blocks", dit["hybrid"]["median_ms"], "diffusers bf16", bf16, "<= 1.2"))
    rows.append(("same, all 30 blocks linear", dit["linear"]["median_ms"], "diffusers bf16", bf16, "<= 0.5"))
    out += ["| work | vdit ms | PyTorch reference | PyTorch ms | ratio | target |", "|---|---:|---|---:|---:|---|"]
    for name, v, ref, r, target in rows:
        ratio = v / r if v and r else float("nan")
        out.append(f"| {name} | {v:.2f} | {ref} | {r:.2f} | {ratio:.1f} | {target} |")
    out += ["| Wan-VAE decode 21x60x104 | not measured yet | diffusers bf16 | 2071 (reference) | | <= 1.0 |", ""]
    out += ["## DiT forward details", "",
            f"- Same random weights in both programs (diffusers layout, saved by `bench/torch_dit.py`): "
            f"`vdit dit-forward --precision f16` differs from diffusers fp32 (TF32 off) by relative L2 "
            f"{tdit['vdit_f16_vs_fp32_rel_l2']:.1e}; diffusers bf16 differs by {tdit['bf16_vs_fp32_rel_l2']:.1e}, "
            f"fp16 by {tdit['fp16_vs_fp32_rel_l2']:.1e}.",
            f"- diffusers: bf16 {tdit['bf16_ms']:.0f} ms ({tdit['bf16_peak_gb']:.2f} GB peak), fp16 {tdit['fp16_ms']:.0f} ms, "
            f"fp32 {tdit['fp32_ms']:.0f} ms.",
            f"- vdit f16 tensors held during the forward: {dit['softmax']['tensor_bytes'] / 2**30:.2f} GiB (weights + activations).",
            "", "Where the time goes (vdit, softmax plan, one forward):", "",
            "| kernel | count | total ms | share | TFLOP/s |", "|---|---:|---:|---:|---:|"]
    for k in dit["softmax"]["kernels"][:8]:
        out.append(f"| {k['label']} | {k['count']} | {k['total_ms']:.0f} | {100 * k['share']:.1f}% | {k['gflops'] / 1e3:.1f} |")
    out += ["", "## Core kernels at Wan2.1 1.3B shapes (`vdit bench kernels`)", "",
            "| kernel | mean ms | TFLOP/s | GB/s |", "|---|---:|---:|---:|"]
    for k in kernels["kernels"]:
        out.append(f"| {k['label']} | {k['mean_ms']:.3f} | {k['gflops'] / 1e3:.2f} | {k['gbps']:.0f} |")
    out += ["", "PyTorch `F.linear` on the same GPU:", "", "| op | dtype | ms | TFLOP/s |", "|---|---|---:|---:|"]
    for r in torch_mm["rows"]:
        out.append(f"| {r['op']} | {r['dtype']} | {r['ms']:.3f} | {r['tflops']:.0f} |")
    out += ["", "## What limits each row", "",
            "- matmul: the portable kernel (64x64 tile, 4x4 outputs per thread, f32 FMAs) reaches ~14 TFLOP/s;",
            "  tensor cores are only reachable through cooperative matrices, which the adapter offers",
            "  (16x16x16 f16 -> f32) but no kernel uses yet.",
            "- attention: the flash kernel runs on f32 FMAs at ~9 TFLOP/s; 78% of the softmax forward.",
            "  The same cooperative-matrix work (QK^T and PV) is the road to SDPA-class speed.",
            "- linear plan: feature maps and the apply pass are naive loops (~1.4 and ~2.8 TFLOP/s).",
            ""]
    open(os.path.join(HERE, "RESULTS.md"), "w").write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
