"""Builds bench/RESULTS.md from the files `bench/run_gpu.sh DIR` leaves in DIR, with the
hand-written TARGETS.md and MEMORY.md after the first table and LIMITS.md at the end.

Usage: python3 bench/make_results.py [DIR]   (default: bench/results)
Every ratio compares two timings taken in the same command on the same GPU.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    res = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")

    def load(name):
        path = os.path.join(res, name)
        return json.load(open(path)) if os.path.exists(path) else None

    def kernel_ms(doc, prefix):
        for k in (doc or {}).get("kernels", []):
            if k["label"].startswith(prefix):
                return k["mean_ms"]
        return None

    def dit_kernel_ms(doc, prefix):
        for k in (doc or {}).get("kernels", []):
            if k["label"].startswith(prefix):
                return k["total_ms"] / k["count"]
        return None

    def torch_mm(op, dtype):
        for r in (load("torch_matmul.json") or {}).get("rows", []):
            if r["op"].startswith(op) and r["dtype"] == dtype:
                return r["ms"]
        return None

    def first_result(doc):
        rows = (doc or {}).get("results", [])
        return rows[0]["median_ms"] if rows else None

    def sci(v):
        return "—" if v is None else f"{v:.1e}"

    def fmt(v, digits=1):
        return "—" if v is None else f"{v:.{digits}f}"

    info = open(os.path.join(res, "info.txt")).read().splitlines() if os.path.exists(os.path.join(res, "info.txt")) else ["?"]
    device = next((l.split(":", 1)[1] for l in info if l.startswith("chosen:")), None) or \
        next((l for l in info if "Vulkan" in l), info[0])
    device = " ".join(device.split())
    out = ["# vdit speed beside PyTorch on the same GPU", "",
           f"{device.strip()}. wgpu 30 on Vulkan. PyTorch timings from the same command (`bench/run_gpu.sh`).",
           f"Date: {info[-1].strip()}.", "",
           "Regenerate: `bench/run_gpu.sh DIR` on the GPU machine, then `python3 bench/make_results.py DIR`",
           "(copy DIR to `bench/results/` to keep it). Ratios are vdit time / PyTorch time: lower is better.", ""]

    kernels, no_coop = load("kernels.json"), load("kernels_no_coop.json")
    vae, vae_tiled = load("vae.json"), load("vae_tiled.json")
    tdit, tvae, gen = load("torch_dit.json"), load("torch_vae.json"), load("generate.json")
    gen50, tgen = load("generate50.json"), load("torch_generate.json")
    dit = {m: load(f"dit_{m}.json") for m in ("softmax", "hybrid", "linear", "linear_no_coop")}
    tatt = None
    for r in (load("torch_attention.json") or {}).get("results", []):
        if r["precision"] == "bf16":
            tatt = r["median_ms"]
    bf16 = tdit.get("bf16_ms") if tdit else None

    rows = [
        ("matmul 32760x1536x8960, f16 in, f32 acc (cooperative matrices; mean of the 30 in a DiT forward)",
         dit_kernel_ms(dit["softmax"], "matmul+gated residual coop 32760x1536x8960"), "cuBLAS fp16",
         torch_mm("linear ffn-down", "float16"), 2.0),
        ("same, standalone (`bench kernels`)", kernel_ms(kernels, "matmul+gated residual coop 32760x1536x8960 f16"),
         "cuBLAS fp16", torch_mm("linear ffn-down", "float16"), None),
        ("same, f16 without cooperative matrices (`--no-coop`)",
         kernel_ms(no_coop, "matmul+gated residual 32760x1536x8960 f16"), "cuBLAS fp16",
         torch_mm("linear ffn-down", "float16"), None),
        ("same, portable f32 path", kernel_ms(kernels, "matmul+gated residual 32760x1536x8960 f32"),
         "cuBLAS fp32 no-TF32", torch_mm("linear ffn-down", "float32"), 1.25),
        ("softmax attention 12x128, N=32760, f16 (cooperative matrices)", first_result(load("attention.json")),
         "SDPA bf16", tatt, 2.5),
        ("same, `--no-coop`", first_result(load("attention_no_coop.json")), "SDPA bf16", tatt, None),
        ("Wan2.1 1.3B DiT forward, 32760 tokens, softmax", (dit["softmax"] or {}).get("median_ms"),
         "diffusers bf16", bf16, 1.5),
        ("same, hybrid R=2 on 15 blocks", (dit["hybrid"] or {}).get("median_ms"), "diffusers bf16", bf16, 1.2),
        ("same, all 30 blocks linear", (dit["linear"] or {}).get("median_ms"), "diffusers bf16", bf16, 0.5),
        ("same, all linear, `--no-coop`", (dit["linear_no_coop"] or {}).get("median_ms"), "diffusers bf16", bf16, None),
        ("Wan-VAE decode 21x60x104 -> 81 frames", (vae or {}).get("median_ms"), "diffusers bf16",
         (tvae or {}).get("bf16_ms"), 1.0),
        ("same, in 256 x 256 pixel tiles (`--vae-tile 32,8`)", (vae_tiled or {}).get("median_ms"), "diffusers bf16",
         (tvae or {}).get("bf16_ms"), None),
    ]
    out += ["| work | vdit ms | PyTorch reference | PyTorch ms | ratio | target |", "|---|---:|---|---:|---:|---|"]
    for name, v, ref, r, target in rows:
        ratio = v / r if v and r else None
        met = "" if ratio is None or target is None else (" (met)" if ratio <= target else " (missed)")
        tgt = "—" if target is None else f"<= {target}{met}"
        out.append(f"| {name} | {fmt(v, 2)} | {ref} | {fmt(r, 2)} | {fmt(ratio)} | {tgt} |")
    out.append("")
    # Hand-written sections of the latest H200 runs: the issue targets and the memory rows.
    for notes in ("TARGETS.md", "MEMORY.md"):
        path = os.path.join(HERE, notes)
        if os.path.exists(path):
            out += [open(path).read().strip(), ""]

    def gib(doc):
        return doc["peak_bytes"] / 2**30 if doc else None

    if tvae or vae:
        tvae = tvae or {}
        out += ["## VAE decode", "",
                f"- diffusers bf16: {fmt(tvae.get('bf16_ms'), 0)} ms, peak {fmt(tvae.get('bf16_peak_gb'), 2)} GB; "
                f"fp32: {fmt(tvae.get('fp32_ms'), 0)} ms, peak {fmt(tvae.get('fp32_peak_gb'), 2)} GB.",
                f"- vdit (f16 storage, warm): whole frames {fmt((vae or {}).get('median_ms'), 0)} ms, peak GPU memory "
                f"{fmt(gib(vae), 2)} GiB; in tiles {fmt((vae_tiled or {}).get('median_ms'), 0)} ms, peak {fmt(gib(vae_tiled), 2)} GiB.",
                f"- `vdit vae-decode` on diffusers' weights (cold, shaders compiled on the way): "
                f"{fmt(tvae.get('vdit_ms'), 0)} ms; relative L2 error against diffusers fp32: "
                f"{sci(tvae.get('vdit_vs_fp32_rel_l2'))} (diffusers bf16: {sci(tvae.get('bf16_vs_fp32_rel_l2'))}).", ""]
        if tvae.get("vdit_error"):
            out += ["vdit failed:", "", "```", tvae["vdit_error"][-800:], "```", ""]
    if gen:
        out += ["## Whole generation (random full-size weights)", "",
                f"- {gen.get('width')}x{gen.get('height')}, {gen.get('frames')} frames, guidance {gen.get('guidance')}: "
                f"{gen.get('steps')} steps measured, {fmt(gen.get('step_ms'), 0)} ms per step (two forwards), "
                f"VAE decode {fmt(gen.get('decode_ms'), 0)} ms.",
                f"- 50 steps at that rate: {fmt(gen.get('projected_50_steps_s'), 0)} s (projected from the measured steps).",
                f"- Peak GPU memory held by tensors: DiT stage {fmt(gen.get('dit_peak_gib'), 2)} GiB, "
                f"VAE stage {fmt(gen.get('vae_peak_gib'), 2)} GiB.",
                "- The prompt contexts are random embeddings: the text encoder runs before the DiT and is freed.", ""]
    if gen50 or tgen:
        gen50, tgen = gen50 or {}, tgen or {}
        steps_s = sum(gen50.get("steps_ms") or [float("nan")]) / 1e3
        decode_s = (gen50.get("decode_ms") or float("nan")) / 1e3
        out += [f"50 steps end to end, {tgen.get('width', gen50.get('width'))}x{tgen.get('height', gen50.get('height'))}, "
                f"{tgen.get('frames', gen50.get('frames'))} frames, guidance 5.0, beside diffusers' WanPipeline (bf16, "
                "UniPC) with random weights of the same sizes (vdit's first step includes compiling its pipelines; "
                "diffusers ran one step and one decode before):", "",
                "| stage | vdit s | vdit peak GiB | diffusers s | diffusers peak GiB |", "|---|---:|---:|---:|---:|",
                f"| denoising, 50 steps | {fmt(steps_s, 1)} | {fmt(gen50.get('dit_peak_gib'), 2)} | "
                f"{fmt(tgen.get('denoise_s'), 1)} | {fmt(tgen.get('denoise_peak_gib'), 2)} |",
                f"| VAE decode to frames | {fmt(decode_s, 2)} | {fmt(gen50.get('vae_peak_gib'), 2)} | "
                f"{fmt(tgen.get('decode_s'), 2)} | {fmt(tgen.get('decode_peak_gib'), 2)} |",
                f"| whole | {fmt(steps_s + decode_s, 1)} | | {fmt(tgen.get('total_s'), 1)} | |", ""]
    if tdit:
        out += ["## DiT forward", "",
                f"- Same random weights in both programs: `vdit dit-forward --precision f16` differs from diffusers fp32 "
                f"(TF32 off) by relative L2 {tdit.get('vdit_f16_vs_fp32_rel_l2', float('nan')):.1e}; diffusers bf16 differs by "
                f"{tdit.get('bf16_vs_fp32_rel_l2', float('nan')):.1e}.",
                f"- diffusers: bf16 {fmt(tdit.get('bf16_ms'), 0)} ms ({fmt(tdit.get('bf16_peak_gb'), 2)} GB peak), "
                f"fp16 {fmt(tdit.get('fp16_ms'), 0)} ms, fp32 {fmt(tdit.get('fp32_ms'), 0)} ms.", ""]
    for mode in ("softmax", "hybrid", "linear"):
        d = dit[mode]
        if not d:
            continue
        out += [f"Where the time goes, {mode} plan (one forward, {d['tensor_bytes'] / 2**30:.2f} GiB of tensors):", "",
                "| kernel | count | total ms | share | TFLOP/s |", "|---|---:|---:|---:|---:|"]
        for k in d["kernels"][:8]:
            out.append(f"| {k['label']} | {k['count']} | {k['total_ms']:.0f} | {100 * k['share']:.1f}% | {k['gflops'] / 1e3:.1f} |")
        out.append("")
    if vae:
        out += ["Where the time goes, VAE decode (whole frames):", "",
                "| kernel | count | total ms | share | TFLOP/s |", "|---|---:|---:|---:|---:|"]
        for k in vae["kernels"][:8]:
            out.append(f"| {k['label']} | {k['count']} | {k['total_ms']:.0f} | {100 * k['share']:.1f}% | {k['gflops'] / 1e3:.1f} |")
        out.append("")
    if kernels:
        out += ["## Core kernels at Wan2.1 1.3B shapes (`vdit bench kernels`)", "",
                "| kernel | mean ms | TFLOP/s | GB/s |", "|---|---:|---:|---:|"]
        for doc in (kernels, no_coop):
            for k in (doc or {}).get("kernels", []):
                tag = " (`--no-coop`)" if doc is no_coop else ""
                out.append(f"| {k['label']}{tag} | {k['mean_ms']:.3f} | {k['gflops'] / 1e3:.2f} | {k['gbps']:.0f} |")
        out += ["", "PyTorch `F.linear` on the same GPU:", "", "| op | dtype | ms | TFLOP/s |", "|---|---|---:|---:|"]
        for r in (load("torch_matmul.json") or {}).get("rows", []):
            out.append(f"| {r['op']} | {r['dtype']} | {r['ms']:.3f} | {r['tflops']:.0f} |")
        out.append("")
    limits = os.path.join(HERE, "LIMITS.md")
    if os.path.exists(limits):
        out += [open(limits).read().strip(), ""]
    open(os.path.join(HERE, "RESULTS.md"), "w").write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
