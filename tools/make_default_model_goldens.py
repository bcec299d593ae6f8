#!/usr/bin/env python3
"""Golden of a whole generation with the embedded default model, by diffusers' WanPipeline.

Writes assets/goldens/default_model/pipeline.safetensors and goldens.json: WanPipeline loads
assets/default-model (the float16 weights as stored, computing in float32 on the CPU), encodes a
prompt and the empty negative prompt, starts from the latent that vdit draws for SEED
(SplitMix64 + Box-Muller, crates/vdit-model/src/pipeline/noise.rs, replayed here bit for bit),
samples with UniPC and classifier-free guidance, and decodes with the Wan-VAE. Stored:

    prompt_embeds            [L, 64]   the prompt's context without the pipeline's zero padding
    negative_prompt_embeds   [L', 64]  the same for ""
    latent_initial           [16, F, H/8, W/8]   normalized, as the sampler starts
    latent_final             [16, F, H/8, W/8]   the denoised latent, normalized
    video                    [3, frames, H, W]   the decoder's output in [-1, 1]

The Rust test (tests/default_model.rs) runs vdit's Pipeline from the same embeddings and seed and
compares the final latent and the video. Small size, so the file stays small and the test fast.

Run from the repository root after the default model changes:  python tools/make_default_model_goldens.py
"""

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffusers import WanPipeline  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from golden_utils import GOLDENS, REPO_ROOT, save_json, save_tensors, setup_torch, versions  # noqa: E402

MODEL = REPO_ROOT / "assets" / "default-model"
OUT = GOLDENS / "default_model"
PROMPT = "a yellow square moving right on a blue background"
SEED = 5
WIDTH, HEIGHT, FRAMES, STEPS, GUIDANCE = 80, 48, 5, 6, 4.0


def splitmix_gaussian(seed, count):
    """vdit's initial noise: SplitMix64 uniforms, Box-Muller in float64, rounded to float32."""
    mask = (1 << 64) - 1
    state = seed & mask

    def next_u64():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    out = []
    while len(out) < count:
        u1 = (next_u64() >> 11) * (1.0 / (1 << 53))
        u2 = (next_u64() >> 11) * (1.0 / (1 << 53))
        r = math.sqrt(-2.0 * math.log(1.0 - u1))
        theta = 2.0 * math.pi * u2
        out.append(r * math.cos(theta))
        out.append(r * math.sin(theta))
    return torch.tensor(out[:count], dtype=torch.float64).float()


def main():
    setup_torch()
    diffusers_logging.set_verbosity_error()
    pipe = WanPipeline.from_pretrained(str(MODEL), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    shape = (16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    latent0 = splitmix_gaussian(SEED, math.prod(shape)).view(shape)

    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(prompt=PROMPT, negative_prompt="",
                                          do_classifier_free_guidance=True, max_sequence_length=512)
        final = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=HEIGHT, width=WIDTH,
                     num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     latents=latent0.unsqueeze(0).clone(), output_type="latent").frames
        # The pipeline's own decode, without its conversion to [0, 1] images.
        vae = pipe.vae
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        video = vae.decode(final * std + mean, return_dict=False)[0]

    def trimmed(e):
        rows = int((e[0].abs().sum(dim=1) > 0).sum())
        assert torch.all(e[0, rows:] == 0), "embeddings must be zero after the prompt's tokens"
        return e[0, :rows]

    tensors = {
        "prompt_embeds": trimmed(cond),
        "negative_prompt_embeds": trimmed(uncond),
        "latent_initial": latent0,
        "latent_final": final[0],
        "video": video[0],
    }
    save_tensors(OUT / "pipeline.safetensors", tensors)
    save_json(OUT / "goldens.json", {
        "model": "assets/default-model",
        "prompt": PROMPT, "negative_prompt": "", "seed": SEED,
        "width": WIDTH, "height": HEIGHT, "frames": FRAMES, "steps": STEPS, "guidance": GUIDANCE,
        "flow_shift": pipe.scheduler.config.flow_shift, "sampler": "unipc",
        "versions": versions(),
    })


if __name__ == "__main__":
    main()
