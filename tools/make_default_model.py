#!/usr/bin/env python3
"""The embedded default model: a tiny Wan2.1-architecture text-to-video pipeline with RANDOM weights.

What it is
    A diffusers-layout Wan pipeline folder (assets/default-model/) whose every component has the
    real Wan2.1 T2V architecture at a tiny size:
      transformer/   WanTransformer3DModel   (the DiT; 3 blocks, dim 128 = 2 heads x 64)
      vae/           AutoencoderKLWan        (base_dim 4, z_dim 16, 4x temporal / 8x spatial)
      text_encoder/  UMT5EncoderModel        (2 layers, d_model 64, gated-GELU, 32 relative buckets)
      tokenizer/     a Unigram tokenizer.json trained here on a few paragraphs of English, in a
                     T5 tokenizer folder (<pad> 0, </s> 1, <unk> 2)
      scheduler/     UniPCMultistepScheduler configured exactly as Wan2.1 ships it
      model_index.json, written by WanPipeline.save_pretrained
      vdit.json      the defaults `vdit generate` uses for this model (size, frames, steps, ...)
    Weights are stored as float16 safetensors; the whole folder is a few MB.

What it is not
    The weights are random (seeded), not trained: the model produces abstract moving colour
    patterns, never a picture of the prompt. It exists so that the complete pipeline (tokenizer,
    text encoder, DiT sampling with classifier-free guidance, VAE decoding, video writing) can be
    tried in seconds on any GPU or CPU Vulkan driver without downloading Wan2.1 weights. Real
    content needs the real Wan2.1 weights.

How the random weights are chosen
    Every parameter is drawn from a seeded normal distribution (weights std gain / sqrt(fan_in),
    small biases, norm gains near 1, small modulation tables), with a few gains picked so that the
    result is well-scaled rather than noise or a flat colour: the DiT's output projection is small
    so velocities stay moderate and the sampled latent keeps a standard deviation near 1, the
    cross-attention output projections are larger so that the prompt visibly changes the result,
    and the VAE's last convolution is scaled so the decoded frames span the colour range with only
    about 2% of the values clamped.

Checks
    The script reloads the saved folder with diffusers' WanPipeline (float32 compute on the float16
    weights), runs it end to end at the vdit.json defaults with a fixed prompt and seed on the CPU,
    prints the time, the frames' shape and pixel statistics, checks that they are in range, and
    saves that output as reference_frames.safetensors when it is small enough.

Deterministic: fixed seeds, single-threaded torch, deterministic algorithms. The script deletes and
rewrites assets/default-model/ on every run.

Run from the repository root:  python tools/make_default_model.py
"""

import json
import math
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel
from transformers.utils import logging as transformers_logging

from golden_utils import REPO_ROOT, rel, save_json, setup_torch, versions

OUT_DIR = REPO_ROOT / "assets" / "default-model"
SEED = 2110
STORE_DTYPE = torch.float16

# ----------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------

TEXT_D_MODEL = 64

TEXT_ENCODER = dict(
    d_model=TEXT_D_MODEL,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_decoder_layers=0,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
    is_encoder_decoder=False,
    use_cache=False,
    tie_word_embeddings=False,
)

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=64,  # RoPE split t/h/w = 24/20/20 dims of a head
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_D_MODEL,
    freq_dim=256,
    ffn_dim=384,
    num_layers=3,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)

VAE = dict(
    base_dim=4,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    dropout=0.0,
    # latents_mean / latents_std keep diffusers' defaults: the real Wan2.1 VAE's 16 constants.
)

# Scheduler: the scheduler_config.json of the Wan2.1 T2V diffusers checkpoints.
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    solver_order=2,
    prediction_type="flow_prediction",
    thresholding=False,
    predict_x0=True,
    solver_type="bh2",
    lower_order_final=True,
    disable_corrector=[],
    use_flow_sigmas=True,
    flow_shift=3.0,
    timestep_spacing="linspace",
    steps_offset=0,
    final_sigmas_type="zero",
)

# What `vdit generate` uses for this model when no flag overrides it. 256x160 and 17 frames give
# a latent of 5 x 20 x 32, i.e. 5 x 10 x 16 = 800 DiT tokens.
VDIT_DEFAULTS = {
    "width": 256,
    "height": 160,
    "frames": 17,
    "steps": 8,
    "guidance": 5.0,
    "flow_shift": 3.0,
    "sampler": "unipc",
    "fps": 16,
    "negative_prompt": "",
}

REFERENCE_PROMPT = "a red fox running through snow"
REFERENCE_SEED = 0
REFERENCE_MAX_BYTES = 500_000

# Initialisation gains (see the module docstring).
DIT_PROJ_OUT_GAIN = 0.35
DIT_CROSS_OUT_GAIN = 4.0  # makes the prompt change the result visibly
DIT_TABLE_STD = 0.1
DIT_BIAS_STD = 0.02
VAE_CONV_OUT_GAIN = 0.75
VAE_BIAS_STD = 0.02

TOKENIZER_VOCAB = 2000
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5

# The tokenizer's training text: short scene descriptions in the style of video prompts.
TRAINING_TEXT = """
A red fox runs through fresh snow at the edge of a pine forest. Its breath makes small clouds in
the cold air, and the low winter sun turns the snow gold and blue. The camera follows the fox from
the side as it leaps over a fallen branch and disappears between the trees.

Waves roll onto a rocky beach at sunset. Foam spreads over dark stones, seagulls circle in an
orange and purple sky, and a lighthouse on the cliff begins to glow. The shot slowly pans from the
water to the horizon while the clouds drift to the left.

A busy city street at night, shot from a high window. Cars leave long trails of red and white
light, people with umbrellas cross at the corner, and neon signs reflect in the wet road. Rain
falls steadily and the traffic lights change from green to yellow to red.

A small cat sits on a wooden table next to a cup of coffee and a stack of old books. Morning light
comes through the curtains. The cat looks at the camera, blinks, yawns, and then stretches its
front paws before jumping down to the floor.

A hot air balloon rises above green hills and a quiet river valley. Mist lies in the fields, a
village with white houses and a church tower sits by the water, and two more balloons, one blue
and one yellow, float in the distance. Birds fly past in a line.

Close-up of a chef cutting fresh vegetables on a board: tomatoes, peppers, onions and herbs. The
knife moves quickly and evenly, steam rises from a pan in the background, and a hand adds a pinch
of salt. Warm kitchen light, shallow depth of field, slow motion.

An astronaut floats inside a space station, turning slowly to face a round window. Through the
glass the Earth passes below with white clouds, blue oceans and brown deserts. Tools and a pen
drift in the air, and small lights blink on the panels.

A child in a yellow raincoat jumps into a puddle on a country road. Water splashes in every
direction, a dog barks and runs in circles, and an old tractor drives by in the background.
The sky is grey but a rainbow appears above the fields.

A drone flies low over a desert canyon at dawn. Red and orange rock walls rise on both sides, a
thin river shines at the bottom, and long shadows stretch across the sand. The camera climbs,
revealing mountains and a wide open sky.

Underwater scene in a coral reef. Schools of silver fish turn together, a sea turtle swims past
slowly, and bright coral in pink, purple and green sways in the current. Sunbeams cut through the
clear water from the surface above.

An old train crosses a stone bridge over a deep valley in autumn. The leaves are red, brown and
gold, smoke rises from the engine, and the sound of the wheels echoes. A woman waves from a window
as the last car passes the camera.

A time-lapse of a flower opening in a garden: the petals unfold, a bee lands and leaves, the
shadows move across the grass, and the sky changes from bright noon to the soft pink of evening.
Then stars appear one by one over the dark trees.

A horse gallops along a beach, its mane flying in the wind. Sand sprays behind its hooves, the
sea is calm and silver, and mountains stand far away under a pale sky. Cinematic, wide angle,
realistic, high quality, detailed, smooth camera motion.

Two friends ride bicycles down a narrow street in an old town. Flowers hang from balconies,
a baker opens his shop, pigeons fly up from the square, and church bells ring at eight o'clock.
The camera tracks them from behind, then they turn the corner and smile.
"""


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def build_tokenizer():
    """A small Unigram tokenizer with the T5 tokenizer's structure (Metaspace, </s> appended)."""
    tok = Tokenizer(models.Unigram())
    # No normaliser: transformers' T5Tokenizer rebuilds its pipeline on loading and keeps only a
    # SentencePiece "precompiled" normaliser, so any other normaliser would make the tokenizer.json
    # and transformers disagree.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/&%+=*#@$")
    trainer = trainers.UnigramTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        initial_alphabet=alphabet,
        max_piece_length=12,
        shrinking_factor=0.75,
        n_sub_iterations=2,
        show_progress=False,
    )
    paragraphs = [p.strip() for p in TRAINING_TEXT.strip().split("\n\n")]
    tok.train_from_iterator(paragraphs, trainer=trainer)
    # The trainer is not reproducible to the bit: its sums run in an unspecified order, and the
    # single characters it keeps without learning a score for them (alphabet characters, rare
    # letters) get made-up scores just below the lowest learned one, assigned in hash order. Round
    # the scores, give all those characters one score below every other piece, and sort the pieces
    # (after the special tokens) by score, then text, so tokenizer.json is the same on every run.
    trained = json.loads(tok.to_str())["model"]
    special = [(p, 0.0) for p, _ in trained["vocab"][: len(SPECIAL_TOKENS)]]
    rest = [(p, round(sc, 4)) for p, sc in trained["vocab"][len(SPECIAL_TOKENS):]]
    lowest_learned = min(sc for p, sc in rest if len(p) > 1)
    filler = {p for p, sc in rest if len(p) == 1 and p != "\u2581" and sc < lowest_learned + 0.05}
    filler_score = round(lowest_learned - 1.0, 2)
    rest = [(p, filler_score if p in filler else sc) for p, sc in rest]
    pieces = special + sorted(rest, key=lambda ps: (-ps[1], ps[0]))
    tok.model = models.Unigram(pieces, unk_id=trained["unk_id"], byte_fallback=False)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"{t} must have id {i}"
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def as_t5_tokenizer(tok, scratch):
    """The transformers T5 tokenizer wrapping `tok` (no sentinel <extra_id_N> tokens)."""
    path = scratch / "tokenizer.json"
    tok.save(str(path))
    return T5Tokenizer(tokenizer_file=str(path), extra_ids=0, model_max_length=512)


def check_tokenizer(tok):
    """The saved tokenizer.json (read by the Rust side) and transformers agree with `tok`."""
    saved = Tokenizer.from_file(str(OUT_DIR / "tokenizer" / "tokenizer.json"))
    loaded = T5Tokenizer.from_pretrained(str(OUT_DIR / "tokenizer"))
    for text in (REFERENCE_PROMPT, "", "  Two  CATS, one dog!  ", "\u00e9t\u00e9 \u2603 caf\u00e9 #42"):
        ids = tok.encode(text).ids
        assert saved.encode(text).ids == ids, text
        assert loaded(text).input_ids == ids, text
        assert ids[-1] == 1, "</s> must be appended"
    enc = tok.encode(REFERENCE_PROMPT)
    print(f"  {REFERENCE_PROMPT!r} -> {enc.tokens} {enc.ids}")
    print(f"  '' -> {tok.encode('').ids}")


# ----------------------------------------------------------------------------------------------
# Random parameters
# ----------------------------------------------------------------------------------------------

def normal(shape, gen, std):
    return torch.randn(shape, generator=gen) * std


def randomize_transformer(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                p.copy_(normal(p.shape, gen, DIT_TABLE_STD))
            elif ".norm" in name and name.endswith(".weight"):
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, gen, DIT_BIAS_STD))
            elif name.endswith(".weight"):
                fan_in = p[0].numel()
                gain = 1.0
                if "time_proj" in name:
                    gain = 0.5
                elif name.startswith("proj_out"):
                    gain = DIT_PROJ_OUT_GAIN
                elif ".attn2.to_out" in name:
                    gain = DIT_CROSS_OUT_GAIN
                p.copy_(normal(p.shape, gen, gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"parameter {name} has no initialisation rule")


def randomize_vae(vae, gen):
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, gen, VAE_BIAS_STD))
            elif name.endswith(".weight"):
                fan_in = p[0].numel()
                gain = VAE_CONV_OUT_GAIN if name == "decoder.conv_out.weight" else 1.0
                p.copy_(normal(p.shape, gen, gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"parameter {name} has no initialisation rule")


def randomize_text_encoder(model, gen):
    d_kv = TEXT_ENCODER["d_kv"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "shared.weight":
                p.copy_(normal(p.shape, gen, 1.0))
            elif name.endswith("relative_attention_bias.weight"):
                p.copy_(normal(p.shape, gen, 0.5))
            elif name.endswith("layer_norm.weight"):
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=gen))
            elif name.endswith(".weight"):
                fan_in = p.shape[1]
                # T5 has no 1/sqrt(d_kv) in attention; its query weights carry that factor.
                gain = 1.0 / math.sqrt(d_kv) if name.endswith(".q.weight") else 1.0
                p.copy_(normal(p.shape, gen, gain / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"parameter {name} has no initialisation rule")


# ----------------------------------------------------------------------------------------------
# Build, save, check
# ----------------------------------------------------------------------------------------------

def folder_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def stats(t):
    t = t.double()
    return f"mean {t.mean().item():+.4f} std {t.std().item():.4f} min {t.min().item():+.3f} max {t.max().item():+.3f}"


def build_pipeline(gen):
    print("\n=== tokenizer ===")
    tok = build_tokenizer()
    vocab = tok.get_vocab_size()
    print(f"  Unigram vocabulary: {vocab} pieces")

    print("\n=== modules ===")
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=vocab, **TEXT_ENCODER)).eval()
    randomize_text_encoder(text_encoder, gen)
    transformer = WanTransformer3DModel(**TRANSFORMER).eval()
    randomize_transformer(transformer, gen)
    vae = AutoencoderKLWan(**VAE).eval()
    randomize_vae(vae, gen)
    scheduler = UniPCMultistepScheduler(**SCHEDULER)
    for name, m in (("text_encoder", text_encoder), ("transformer", transformer), ("vae", vae)):
        print(f"  {name:<13} {sum(p.numel() for p in m.parameters()):>9} parameters")
    return tok, text_encoder, transformer, vae, scheduler


def save_all(tok, text_encoder, transformer, vae, scheduler):
    shutil.rmtree(OUT_DIR, ignore_errors=True)  # no stale files from an earlier run
    OUT_DIR.mkdir(parents=True)
    scratch = OUT_DIR / "_scratch"
    scratch.mkdir()
    t5 = as_t5_tokenizer(tok, scratch)
    shutil.rmtree(scratch)
    pipe = WanPipeline(
        tokenizer=t5,
        text_encoder=text_encoder.to(STORE_DTYPE),
        vae=vae.to(STORE_DTYPE),
        scheduler=scheduler,
        transformer=transformer.to(STORE_DTYPE),
    )
    pipe.save_pretrained(str(OUT_DIR), safe_serialization=True)
    # transformers 5 no longer writes special_tokens_map.json; T5 tokenizer folders carry one.
    save_json(OUT_DIR / "tokenizer" / "special_tokens_map.json",
              {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    check_tokenizer(tok)
    save_json(OUT_DIR / "vdit.json", {**VDIT_DEFAULTS, "note": VDIT_NOTE})
    for f in sorted(OUT_DIR.rglob("*")):
        if f.is_file():
            print(f"  wrote {rel(f)} ({f.stat().st_size} bytes)")


VDIT_NOTE = (
    "Embedded default model: the Wan2.1 text-to-video architecture at a tiny size with random "
    "(untrained) weights, made by tools/make_default_model.py. It shows the pipeline working; "
    "it cannot draw what the prompt describes. Use --model with real Wan2.1 weights for that."
)


def reference_run():
    """Load the saved folder with diffusers and generate at the vdit.json defaults on the CPU."""
    print("\n=== reference run (diffusers WanPipeline, CPU, float32 compute) ===")
    pipe = WanPipeline.from_pretrained(str(OUT_DIR), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    d = VDIT_DEFAULTS
    gen = torch.Generator().manual_seed(REFERENCE_SEED)
    latents_seen = {}

    def keep_latents(_pipe, step, _t, kwargs):
        latents_seen[step] = kwargs["latents"].clone()
        return {}

    start = time.perf_counter()
    out = pipe(
        prompt=REFERENCE_PROMPT,
        negative_prompt=d["negative_prompt"],
        height=d["height"],
        width=d["width"],
        num_frames=d["frames"],
        num_inference_steps=d["steps"],
        guidance_scale=d["guidance"],
        generator=gen,
        output_type="pt",
        callback_on_step_end=keep_latents,
    )
    elapsed = time.perf_counter() - start
    frames = out.frames[0]  # [F, 3, H, W] in [0, 1]
    final_latent = latents_seen[d["steps"] - 1][0]
    print(f"  prompt {REFERENCE_PROMPT!r}, seed {REFERENCE_SEED}, {d['steps']} steps, guidance {d['guidance']}")
    print(f"  took {elapsed:.2f} s on {torch.get_num_threads()} CPU thread(s)")
    print(f"  final latent {tuple(final_latent.shape)}: {stats(final_latent)}")
    print(f"  frames {tuple(frames.shape)} (F, C, H, W): {stats(frames)}")
    clamped = ((frames <= 0.0) | (frames >= 1.0)).double().mean().item()
    per_channel = frames.double().mean(dim=(0, 2, 3))
    temporal = (frames[1:] - frames[:-1]).abs().double().mean().item()
    print(f"  clamped fraction {clamped:.4f}, channel means {[round(v, 3) for v in per_channel.tolist()]}, "
          f"mean |frame difference| {temporal:.4f}")
    assert frames.shape == (d["frames"], 3, d["height"], d["width"])
    assert torch.isfinite(frames).all()
    assert 0.5 < final_latent.std().item() < 2.0, "sampled latent is badly scaled"
    assert 0.12 < frames.std().item() < 0.4, "frames are flat or saturated"
    assert clamped < 0.05, "too many clamped pixels"
    return frames, elapsed


def main():
    setup_torch()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    print("versions:", json.dumps(versions()))
    gen = torch.Generator().manual_seed(SEED)
    save_all(*build_pipeline(gen))

    frames, _ = reference_run()
    # Reference output as 8-bit-exact values (round(255 x)), stored as uint8 to stay small.
    ref = (frames * 255.0).round().clamp(0, 255).to(torch.uint8).contiguous()
    path = OUT_DIR / "reference_frames.safetensors"
    if ref.numel() <= REFERENCE_MAX_BYTES:
        save_file({"frames": ref}, str(path), metadata={"prompt": REFERENCE_PROMPT, "seed": str(REFERENCE_SEED)})
        print(f"  wrote {rel(path)} ({path.stat().st_size} bytes)")
    else:
        print(f"  reference frames are {ref.numel()} bytes as uint8 (> {REFERENCE_MAX_BYTES}): not saved")

    for f in OUT_DIR.rglob("*"):
        if f.is_file():
            f.chmod(0o644)  # the libraries write some files owner-only
    total = folder_size(OUT_DIR)
    print(f"\nassets/default-model: {total} bytes ({total / 2**20:.2f} MiB)")
    assert total < 4.2 * 2**20, "the default model must stay a few MB"


if __name__ == "__main__":
    main()
