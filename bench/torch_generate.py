"""diffusers' WanPipeline end to end with random weights: the row beside `vdit bench generate`.

Usage (on the GPU machine, diffusers importable):
  python3 bench/torch_generate.py --out DIR [--frames 17 --height 480 --width 832 --steps 50]
Builds the Wan2.1 T2V 1.3B transformer and the Wan-VAE with seeded random weights in bf16,
gives the pipeline random prompt embeddings (no text encoder: `vdit bench generate` runs none
either), runs the denoising loop with classifier-free guidance 5.0 and UniPC (flow shift 3.0),
then the decode and the conversion to frames, as WanPipeline does. Reports the time of each
stage (CUDA synchronised) and each stage's peak GPU memory. Writes DIR/torch_generate.json.
"""
import argparse
import json
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    args = ap.parse_args()

    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        ).to(torch.bfloat16).eval()
        vae = AutoencoderKLWan().to(torch.bfloat16).eval()
    with torch.no_grad():
        for module in (transformer, vae):
            for p in module.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, p[0].numel() ** -0.5)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=3.0,
    )
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    context = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16) * 0.2
    negative = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16) * 0.2

    step_ends = []

    def on_step_end(_pipe, _i, _t, kwargs):
        torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
        return kwargs

    def denoise(steps):
        return pipe(
            prompt_embeds=context, negative_prompt_embeds=negative, height=args.height,
            width=args.width, num_frames=args.frames, num_inference_steps=steps,
            guidance_scale=args.guidance, output_type="latent", return_dict=False,
            callback_on_step_end=on_step_end,
            generator=torch.Generator("cuda").manual_seed(1),
        )[0]

    def decode(latents):
        # As WanPipeline does after the loop.
        latents = latents.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
        video = vae.decode(latents * std + mean, return_dict=False)[0]
        return pipe.video_processor.postprocess_video(video, output_type="np")

    with torch.no_grad():
        # Warm-up: one step and one decode (kernels chosen, memory pools grown).
        decode(denoise(1))
        torch.cuda.synchronize()
        step_ends.clear()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        latents = denoise(args.steps)
        torch.cuda.synchronize()
        denoise_s = time.perf_counter() - start
        denoise_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        frames = decode(latents)
        torch.cuda.synchronize()
        decode_s = time.perf_counter() - start
        decode_peak = torch.cuda.max_memory_allocated()

    steps = [b - a for a, b in zip(step_ends, step_ends[1:])]
    result = {
        "program": "diffusers WanPipeline, bf16", "frames": args.frames, "height": args.height,
        "width": args.width, "steps": args.steps, "guidance": args.guidance,
        "denoise_s": denoise_s, "step_ms": 1e3 * sum(steps) / max(len(steps), 1),
        "decode_s": decode_s, "total_s": denoise_s + decode_s,
        "denoise_peak_gib": denoise_peak / 2**30, "decode_peak_gib": decode_peak / 2**30,
        "output_shape": list(frames.shape),
    }
    print(json.dumps(result, indent=1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "torch_generate.json"), "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
