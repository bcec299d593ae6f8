#!/usr/bin/env python3
"""Goldens for the umT5 text encoder and its tokenizer, produced by transformers' UMT5EncoderModel,
and the malicious / broken PyTorch checkpoints the restricted unpickler must refuse.

The real google/umt5-xxl tokenizer.json cannot be downloaded here, so the script builds a small
Unigram tokenizer with the `tokenizers` package (pieces and scores from counts over a short text
written here), shaped like the real one: NFKC and a
" {2,}" -> " " regex replacement as normalizer, Metaspace pre-tokenizer, `<pad>`=0, `</s>`=1,
`<unk>`=2, and a post-processor appending `</s>`. A tiny random-weight UMT5EncoderModel with the
real model's structure (gated-GELU, 32 buckets, max distance 128, a relative attention bias in
every layer) is then run on a few prompts, tokenized as the Wan reference does it: its clean-up
(ftfy.fix_text, html.unescape twice, whitespace collapsed), padding to 512 with truncation, EOS
appended, the attention mask passed; the output is trimmed to the prompt's length.

Writes, under assets/goldens/t5/:
  tokenizer/tokenizer.json
  text_encoder/        config.json + sharded model safetensors (HF / diffusers layout, f32)
  comfyui/umt5_tiny_fp16.safetensors   HF names, float16, one file
  original/models_t5_umt5-xxl-enc-bf16.pth + original/google/umt5-xxl/tokenizer.json
                       the Wan2.1 repository's names, bfloat16, torch.save of a state dict; some
                       tensors are strided views or share a storage at an offset
  io.safetensors       `<prompt>.hidden` [L, d_model] for each prompt, `buckets` [1023]
  prompts.json         prompts, cleaned text, token ids, lengths
and under assets/goldens/pth/ the checkpoints that must be refused (see README.md there).

Weights are rounded to bfloat16 values first, so the f32, f16 and bf16 copies hold the same
numbers (f16 keeps them exactly: they are far from its range limits) and share one golden.

Run from the repository root:  python tools/make_t5_goldens.py
"""

import html
import json
import math
import os

import shutil
import unicodedata
import zipfile
from collections import Counter, OrderedDict

import ftfy
import regex
import tokenizers
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from golden_utils import GOLDENS, rel, rel_l2, save_json, save_tensors, setup_torch, versions

OUT = GOLDENS / "t5"
PTH_OUT = GOLDENS / "pth"
SEED = 1506
TEXT_LEN = 512

CONFIG = dict(
    d_model=32,
    d_kv=8,
    num_heads=4,
    d_ff=48,
    num_layers=3,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6,
    dropout_rate=0.0,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# The text the tokenizer's pieces are counted on: prompts in the style video models see, other scripts.
CORPUS = [
    "A cat walks on the grass, realistic style, soft light, shallow depth of field.",
    "Two dogs run along a sunny beach while waves roll in; the camera tracks them slowly.",
    "A red sports car drives through a neon city at night, rain on the street, reflections.",
    "An astronaut floats inside a space station, looking out of the window at the blue Earth.",
    "Close-up of a chef slicing vegetables in a busy kitchen, steam rising, warm colours.",
    "Aerial view of a forest in autumn, orange and yellow leaves, a river winding through it.",
    "A small boat sails on a calm lake at sunrise, mist over the water, birds flying above.",
    "Ein Hund läuft über die Straße. Der Himmel ist blau und die Sonne scheint.",
    "Un chat noir dort sur le canapé, la pièce est calme et chaude.",
    "Un perro corre en el parque con una pelota roja.",
    "猫が庭で遊んでいる。空は青くて、風が気持ちいい。",
    "一只小狗在草地上奔跑，阳光明媚。",
    "Кошка сидит на окне и смотрит на улицу.",
]

# name -> prompt. The clean-up matters for `markup` (entities, curly quotes, a ligature, a
# fullwidth letter, tabs and newlines, runs of spaces) and `mojibake`-free non-ASCII text.
PROMPTS = OrderedDict(
    [
        ("empty", ""),
        ("short", "A cat walks on the grass, realistic style."),
        (
            "markup",
            "  Two  dogs &amp; a \u201cred\u201d ball\t\n run on the \ufb01eld &amp;lt;fast&amp;gt; "
            "\uff21   caf\u00e9\u00a0 ",
        ),
        ("non_ascii", "Ein Hund läuft über die Straße — 猫が走る, café naïve ñ, Кошка 🐈."),
        (
            "long",
            " ".join(
                f"Scene {i}: a small boat sails on a calm lake at sunrise, birds flying above."
                for i in range(60)
            ),
        ),
    ]
)


def basic_clean(text):
    """The Wan reference's clean-up (wan/modules/tokenizers.py, clean='whitespace')."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = regex.sub(r"\s+", " ", text)
    return text.strip()


def build_tokenizer():
    """A Unigram model built from piece counts of CORPUS (deterministic, unlike the trainer):
    every character and the 300 most frequent 2- and 3-character pieces and whole words (words
    carry the Metaspace prefix), scored by their log frequency."""
    counts = Counter()
    for line in CORPUS:
        for word in unicodedata.normalize("NFKC", line).split():
            w = "\u2581" + word
            counts[w] += 2
            for n in (1, 2, 3):
                for i in range(len(w) - n + 1):
                    counts[w[i : i + n]] += 1
    chars = sorted(p for p in counts if len(p) == 1)
    longer = sorted((p for p in counts if len(p) > 1), key=lambda p: (-counts[p], p))[:300]
    total = sum(counts.values())
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(p, math.log(counts[p] / total)) for p in chars + longer]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1
    assert tok.token_to_id("<unk>") == 2
    return tok


def relative_bucket(rel_pos, num_buckets=32, max_distance=128):
    """Bidirectional T5 bucket of key - query, written out from the definition."""
    half = num_buckets // 2
    bucket = (rel_pos > 0).long() * half
    n = rel_pos.abs()
    exact = half // 2
    large = exact + (
        torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    large = torch.clamp(large, max=half - 1)
    return bucket + torch.where(n < exact, n, large)


def randomise(model, gen):
    """Every parameter random (norm gains around 1), rounded to bfloat16 values."""
    d, dkv, h, ff = CONFIG["d_model"], CONFIG["d_kv"], CONFIG["num_heads"], CONFIG["d_ff"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
            elif "relative_attention_bias" in name:
                v = 0.7 * torch.randn(p.shape, generator=gen)
            elif name.endswith("shared.weight") or "embed_tokens" in name:
                v = torch.randn(p.shape, generator=gen)
            elif ".q." in name:
                v = torch.randn(p.shape, generator=gen) * (d * dkv) ** -0.5
            elif ".wo." in name:
                v = torch.randn(p.shape, generator=gen) * ff**-0.5
            elif ".o." in name:
                v = torch.randn(p.shape, generator=gen) * (h * dkv) ** -0.5
            else:
                v = torch.randn(p.shape, generator=gen) * d**-0.5
            p.copy_(v.to(torch.bfloat16).float())


def hf_to_original(sd, layers):
    """HF UMT5 encoder names -> the Wan2.1 repository's T5Encoder names."""
    out = OrderedDict()
    out["token_embedding.weight"] = sd["shared.weight"]
    for i in range(layers):
        a = f"encoder.block.{i}.layer.0."
        f = f"encoder.block.{i}.layer.1."
        o = f"blocks.{i}."
        out[o + "norm1.weight"] = sd[a + "layer_norm.weight"]
        for x in "qkvo":
            out[o + f"attn.{x}.weight"] = sd[a + f"SelfAttention.{x}.weight"]
        out[o + "norm2.weight"] = sd[f + "layer_norm.weight"]
        out[o + "ffn.gate.0.weight"] = sd[f + "DenseReluDense.wi_0.weight"]
        out[o + "ffn.fc1.weight"] = sd[f + "DenseReluDense.wi_1.weight"]
        out[o + "ffn.fc2.weight"] = sd[f + "DenseReluDense.wo.weight"]
        out[o + "pos_embedding.embedding.weight"] = sd[a + "SelfAttention.relative_attention_bias.weight"]
    out["norm.weight"] = sd["encoder.final_layer_norm.weight"]
    return out


def original_forward(sd, ids, mask, layers):
    """The Wan reference's encoder written out on the original names (an independent check of
    the name mapping and of transformers' result)."""
    h, dkv, eps = CONFIG["num_heads"], CONFIG["d_kv"], CONFIG["layer_norm_epsilon"]

    def norm(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))

    x = sd["token_embedding.weight"][ids]
    n = x.shape[0]
    pos = torch.arange(n)
    buckets = relative_bucket(pos[None, :] - pos[:, None])
    neg = torch.finfo(torch.float32).min
    for i in range(layers):
        o = f"blocks.{i}."
        y = norm(x, sd[o + "norm1.weight"])
        q, k, v = (y @ sd[o + f"attn.{c}.weight"].T for c in "qkv")
        q, k, v = (t.view(n, h, dkv).transpose(0, 1) for t in (q, k, v))
        bias = sd[o + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)
        s = q @ k.transpose(1, 2) + bias
        s = s.masked_fill(mask[None, None, :] == 0, neg)
        a = torch.softmax(s, -1) @ v
        x = x + a.transpose(0, 1).reshape(n, h * dkv) @ sd[o + "attn.o.weight"].T
        y = norm(x, sd[o + "norm2.weight"])
        g = gelu(y @ sd[o + "ffn.gate.0.weight"].T) * (y @ sd[o + "ffn.fc1.weight"].T)
        x = x + g @ sd[o + "ffn.fc2.weight"].T
    return norm(x, sd["norm.weight"])


def save_original_pth(path, sd):
    """torch.save of the original-named state dict in bfloat16, like the published file, with
    two kinds of views a loader must honour: block 0's q is a transposed copy seen through a
    transpose (strides (1, rows)); block 1's q, k and v are slices of one fused storage."""
    out = OrderedDict((k, v.to(torch.bfloat16)) for k, v in sd.items())
    q = out["blocks.0.attn.q.weight"]
    out["blocks.0.attn.q.weight"] = q.t().contiguous().t()
    assert not out["blocks.0.attn.q.weight"].is_contiguous()
    fused = torch.cat([out[f"blocks.1.attn.{c}.weight"] for c in "qkv"])
    rows = out["blocks.1.attn.q.weight"].shape[0]
    for j, c in enumerate("qkv"):
        out[f"blocks.1.attn.{c}.weight"] = fused[j * rows : (j + 1) * rows]
    out._metadata = OrderedDict([("", {"version": 1})])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    back = torch.load(path, weights_only=True)
    for k in out:
        assert torch.equal(back[k], out[k]), k
    assert back["blocks.1.attn.k.weight"].storage_offset() == rows * CONFIG["d_model"]
    print(f"  wrote {rel(path)} ({path.stat().st_size} bytes, {len(out)} tensors, bfloat16)")


# --- Checkpoints the unpickler must refuse -------------------------------------------------------

MARKER_DIR = "/tmp"


def marker(name):
    return f"{MARKER_DIR}/vdit-pth-marker-{name}"


class CallOnLoad:
    """Pickles as `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def torch_save_payload(path, payload):
    obj = OrderedDict([("weight", torch.arange(6, dtype=torch.float32).view(2, 3)), ("extra", payload)])
    torch.save(obj, path)


def zip_like_torch(path, pickle_bytes, storages=()):
    """A zip laid out as torch.save lays it out (stored entries under `archive/`)."""
    def entry(name):
        return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible files

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), pickle_bytes)
        z.writestr(entry("archive/byteorder"), "little")
        for key, data in storages:
            z.writestr(entry(f"archive/data/{key}"), data)
        z.writestr(entry("archive/version"), "3\n")


def pickle_ops(*parts):
    return b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)


def binunicode(s):
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def write_malicious():
    if PTH_OUT.exists():
        shutil.rmtree(PTH_OUT)
    PTH_OUT.mkdir(parents=True)
    written = []
    # Made by torch.save itself: the globals are posix.system, builtins.eval, builtins.exec.
    torch_save_payload(PTH_OUT / "posix_system.pth", CallOnLoad(os.system, (f"touch {marker('posix-system')}",)))
    torch_save_payload(
        PTH_OUT / "builtins_eval.pth",
        CallOnLoad(eval, (f"__import__('os').system('touch {marker('eval')}')",)),
    )
    torch_save_payload(
        PTH_OUT / "builtins_exec.pth",
        CallOnLoad(exec, (f"import os; os.system('touch {marker('exec')}')",)),
    )
    written += ["posix_system.pth", "builtins_eval.pth", "builtins_exec.pth"]
    # Hand-written: GLOBAL os.system inside an otherwise valid state dict.
    evil = pickle_ops(
        b"\x80\x02}q\x00(",
        binunicode("extra"),
        b"cos\nsystem\n",
        binunicode(f"touch {marker('os-system')}"),
        b"\x85R",
        b"u.",
    )
    zip_like_torch(PTH_OUT / "os_system.pth", evil)
    # STACK_GLOBAL (protocol 4) of builtins.getattr.
    evil = pickle_ops(
        b"\x80\x04}(",
        binunicode("extra"),
        binunicode("builtins"),
        binunicode("getattr"),
        b"\x93",
        binunicode("os"),
        binunicode("system"),
        b"\x86R",
        b"u.",
    )
    zip_like_torch(PTH_OUT / "stack_global_getattr.pth", evil)
    # REDUCE of an allowed global that is not an allowed callable: torch.FloatStorage(...).
    evil = pickle_ops(
        b"\x80\x02}(",
        binunicode("extra"),
        b"ctorch\nFloatStorage\n",
        binunicode(f"touch {marker('reduce')}"),
        b"\x85R",
        b"u.",
    )
    zip_like_torch(PTH_OUT / "reduce_storage_class.pth", evil)
    # INST (an opcode that builds arbitrary objects): 'os system' called on the marked items.
    evil = pickle_ops(b"\x80\x02}(", binunicode("extra"), b"(", binunicode(f"touch {marker('inst')}"), b"ios\nsystem\n", b"u.")
    zip_like_torch(PTH_OUT / "inst_os_system.pth", evil)
    written += ["os_system.pth", "stack_global_getattr.pth", "reduce_storage_class.pth", "inst_os_system.pth"]
    # A valid checkpoint and a truncated copy of it.
    good = PTH_OUT / "valid.pth"
    torch.save(OrderedDict([("weight", torch.arange(6, dtype=torch.float32).view(2, 3))]), good)
    data = good.read_bytes()
    (PTH_OUT / "truncated.pth").write_bytes(data[: len(data) * 2 // 3])
    written += ["valid.pth", "truncated.pth"]
    for name in written:
        print(f"  wrote {rel(PTH_OUT / name)} ({(PTH_OUT / name).stat().st_size} bytes)")
    for name in written:
        if name in ("valid.pth", "truncated.pth"):
            continue
        try:
            torch.load(PTH_OUT / name, weights_only=True)
        except Exception:
            pass
        else:
            raise AssertionError(f"torch's own weights-only loader accepted {name}")
    return {
        "markers": {n: marker(n) for n in ["posix-system", "eval", "exec", "os-system", "reduce", "inst"]},
        "files": written,
    }


README_T5 = """# t5/ — the umT5 text encoder and tokenizer (tools/make_t5_goldens.py)

A tiny random-weight UMT5EncoderModel (d_model 32, 4 heads x 8, d_ff 48, 3 layers, gated-GELU,
32 buckets, max distance 128) and a small Unigram tokenizer built by the script (the real
google/umt5-xxl tokenizer.json cannot be downloaded here). Weights hold bfloat16 values, so all
copies below are the same numbers and share one golden.

- `tokenizer/tokenizer.json`: NFKC + " {2,}" -> " " normalizer, Metaspace, `<pad>` 0, `</s>` 1,
  `<unk>` 2, `</s>` appended by the post-processor.
- `text_encoder/`: `save_pretrained` output (config.json, 2 shards + index), f32, HF names.
- `comfyui/umt5_tiny_fp16.safetensors`: one file, HF names, float16.
- `original/models_t5_umt5-xxl-enc-bf16.pth`: torch.save of the Wan2.1 names in bfloat16; block 0's
  q is a strided (transposed) view, block 1's q/k/v share one storage at offsets.
  `original/google/umt5-xxl/tokenizer.json`: the tokenizer where a Wan2.1 checkpoint keeps it.
- `prompts.json`: per prompt (empty, short, markup, non_ascii, long > 512 tokens): the prompt,
  the reference's cleaned text, the ids (EOS included, truncated to 512), the count.
- `io.safetensors`: `<name>.hidden` [L, 32], transformers' output trimmed to the prompt's L rows
  (run padded to 512 with the attention mask, as the Wan reference does); `buckets` [1023]: the
  relative position bucket of j - i = -511..511.
"""

README_PTH = """# pth/ — checkpoints the restricted unpickler must refuse (tools/make_t5_goldens.py)

Each malicious file would, if unpickled by Python, create the marker file listed in
`goldens.json` (under /tmp); the tests check that loading fails, names the file and the global,
and that no marker exists.

- `posix_system.pth`, `builtins_eval.pth`, `builtins_exec.pth`: written by torch.save around an
  object whose `__reduce__` calls os.system / eval / exec (pickled as `posix.system`,
  `__builtin__.eval`, `__builtin__.exec`), next to a real tensor.
- `os_system.pth`: hand-written pickle with `GLOBAL os.system` + `REDUCE`.
- `stack_global_getattr.pth`: protocol 4 `STACK_GLOBAL builtins.getattr`.
- `reduce_storage_class.pth`: `REDUCE` of an allowed global that is not an allowed callable
  (`torch.FloatStorage(...)`).
- `inst_os_system.pth`: the `INST` opcode (builds arbitrary objects).
- `valid.pth`: a valid one-tensor checkpoint; `truncated.pth`: its first two thirds.
"""


def main():
    setup_torch()
    gen = torch.Generator().manual_seed(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    tok = build_tokenizer()
    tok_path = OUT / "tokenizer" / "tokenizer.json"
    tok_path.parent.mkdir(parents=True)
    tok.save(str(tok_path))
    print(f"  wrote {rel(tok_path)} ({tok.get_vocab_size()} pieces)")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tok_path), eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )

    vocab = (tok.get_vocab_size() + 7) // 8 * 8 + 8  # the embedding has spare rows, as umT5's does
    config = UMT5Config(vocab_size=vocab, **CONFIG)
    model = UMT5EncoderModel(config).eval()
    randomise(model, gen)
    layers = CONFIG["num_layers"]

    hidden = OrderedDict()
    info = []
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if "shared.weight" not in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    original = hf_to_original(sd, layers)
    for name, prompt in PROMPTS.items():
        cleaned = basic_clean(prompt)
        enc = hf_tok(
            [cleaned], padding="max_length", truncation=True, max_length=TEXT_LEN, return_tensors="pt"
        )
        ids, mask = enc.input_ids, enc.attention_mask
        n = int(mask.sum())
        direct = tok.encode(cleaned).ids
        expected_ids = (direct[:-1][: TEXT_LEN - 1] + [1]) if len(direct) > TEXT_LEN else direct
        assert ids[0, :n].tolist() == expected_ids, name
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state[0, :n]
            mine = original_forward(original, ids[0], mask[0], layers)[:n]
        err = rel_l2(mine, out)
        assert err < 1e-5, f"{name}: the original-name forward differs from transformers by {err}"
        hidden[f"{name}.hidden"] = out
        info.append(
            dict(name=name, prompt=prompt, cleaned=cleaned, ids=ids[0, :n].tolist(), tokens=n)
        )
        print(f"    {name:<10} {n:>4} tokens, original-name forward within {err:.1e}")
    assert info[0]["ids"] == [1] and info[-1]["tokens"] == TEXT_LEN
    rel_pos = torch.arange(-(TEXT_LEN - 1), TEXT_LEN)
    hf_buckets = model.encoder.block[0].layer[0].SelfAttention._relative_position_bucket(rel_pos)
    assert torch.equal(hf_buckets, relative_bucket(rel_pos)), "bucket formula"
    hidden["buckets"] = hf_buckets.float()
    save_tensors(OUT / "io.safetensors", hidden)
    save_json(OUT / "prompts.json", info)

    te = OUT / "text_encoder"
    model.save_pretrained(te, max_shard_size="100KB")
    print(f"  wrote {rel(te)}: {sorted(os.listdir(te))}")
    save_tensors(
        OUT / "comfyui" / "umt5_tiny_fp16.safetensors",
        {k: v for k, v in sd.items() if k != "encoder.embed_tokens.weight"},
        dtype=torch.float16,
        list_tensors=False,
    )
    save_original_pth(OUT / "original" / "models_t5_umt5-xxl-enc-bf16.pth", original)
    wan_tok = OUT / "original" / "google" / "umt5-xxl" / "tokenizer.json"
    wan_tok.parent.mkdir(parents=True)
    shutil.copy(tok_path, wan_tok)
    print(f"  wrote {rel(wan_tok)}")

    pth = write_malicious()
    save_json(PTH_OUT / "goldens.json", pth)
    (PTH_OUT / "README.md").write_text(README_PTH)
    (OUT / "README.md").write_text(README_T5)
    save_json(
        OUT / "goldens.json",
        dict(
            seed=SEED,
            config=CONFIG,
            vocab_size=vocab,
            tokenizer_pieces=tok.get_vocab_size(),
            text_len=TEXT_LEN,
            versions=dict(versions(), tokenizers=tokenizers.__version__, ftfy=ftfy.__version__),
        ),
    )


if __name__ == "__main__":
    main()
