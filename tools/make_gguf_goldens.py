#!/usr/bin/env python3
"""Goldens for vdit's GGUF reader, produced by gguf-py (llama.cpp's own Python package, pinned in
requirements.txt): its writer makes the files and its dequantisers give the expected values.

Writes assets/goldens/gguf/:
  blocks.safetensors
      For every GGML block type vdit reads, `<TYPE>.random.bytes` (U8: blocks of random bytes whose
      f16 scales are random finite halves, subnormals and zero included) with
      `<TYPE>.random.values` (F32, gguf-py's dequantisation), and for the types gguf-py can
      quantise, `<TYPE>.quantized.bytes` / `.values`: a real quantisation of N(0, 1) values.
  dit_tiny_legacy.gguf
      The tiny DiT golden weights (dit/tiny/original) under their original Wan names, as
      ComfyUI-GGUF lays a Wan file out (`general.architecture = wan`): each 2-D weight whose rows
      fill 32-value blocks quantised for real, cycling through Q8_0, Q4_0, Q5_0, Q4_1 and Q5_1; the
      other 2-D weights F16, one BF16; vectors F32; the 5-D patch embedding F32, stored flattened
      to [n / 64, 64] with its shape in `comfy.gguf.orig_shape.patch_embedding.weight`.
  dit_tiny_kquants.gguf
      The same model with the "model.diffusion_model." prefix of ComfyUI checkpoints; every 2-D
      weight with a multiple of 256 values is stored as 256-value rows (the converter's shape fix,
      with `comfy.gguf.orig_shape`), as Q2_K, Q3_K, Q4_K, Q5_K and Q6_K in turn, its blocks random
      bytes with small scales (gguf-py cannot quantise k-quants); vectors F32, the rest F16.
  dit_tiny_q8_0.gguf
      The same model with Q8_0 on every 2-D weight whose rows are whole 32-value blocks (what vdit
      keeps quantised on the GPU), F16 on the other 2-D weights, F32 elsewhere.
  umt5_tiny_f32.gguf, umt5_tiny_q8_0.gguf
      The tiny umT5 golden encoder (t5/text_encoder) under llama.cpp's names
      (`general.architecture = t5encoder`, token_embd, enc.blk.N.attn_q, attn_rel_b, ffn_gate...):
      all F32 (it must match transformers' hidden states), and with every weight whose rows fill
      32-value blocks quantised to Q8_0 (the others F16), beside umt5_tiny_q8_0.dequantized.safetensors
      (transformers' names, gguf-py's dequantisation). Both carry the tiny golden tokenizer
      (t5/tokenizer) in their metadata as llama.cpp's converter writes a umT5 tokenizer from its
      SentencePiece model: `tokenizer.ggml.model = t5`, the pieces, scores and token types (the
      vocabulary padded to the embedding's rows with unused "[PAD<i>]" pieces), add_space_prefix,
      remove_extra_whitespaces, the precompiled character map and the special token ids. The
      SentencePiece model is built here from tokenizer.json's pieces, with SentencePiece's own
      NFKC rule (the golden tokenizer's normalizer) compiled to its character map.
  config.json
      The tiny DiT's config (Wan's original format), which vdit reads beside a DiT file.
  dit_tiny_<name>.dequantized.safetensors
      The weights of each GGUF file as gguf-py dequantises them, f32, original names and shapes:
      a DiT loaded from the GGUF file must give the same velocity as one loaded from this.

Run from the repository root:  python tools/make_gguf_goldens.py
"""

import importlib.metadata
import io
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import load_file, save_file
import sentencepiece
from sentencepiece import sentencepiece_model_pb2 as spm_model

# golden_utils is not imported: it needs torch, and nothing here does.
REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDENS = REPO_ROOT / "assets" / "goldens"
OUT = GOLDENS / "gguf"
TINY = GOLDENS / "dit" / "tiny" / "original" / "diffusion_pytorch_model.safetensors"

# Byte offsets of the f16 scale fields in one block of each type.
HALF_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
QUANTISABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# The largest |integer scale x value| of each k-quant: random blocks get f16 scales of at most
# 0.3 over it, weights of about the golden model's magnitude.
K_RANGE = {T.Q2_K: 45 + 15, T.Q3_K: 128, T.Q4_K: 945 + 63, T.Q5_K: 1953 + 63, T.Q6_K: 4096}


def rel(path):
    return os.path.relpath(path, REPO_ROOT)


def random_halves(rng, n):
    """Random finite f16 values as raw bits: every exponent but the all-ones one."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exponent = (bits >> 10) & 0x1F
    bits[exponent == 0x1F] &= np.uint16(0xBFFF)  # clears an exponent bit: finite
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x03FF]  # zero, -zero, the smallest and largest subnormal
    return bits


def random_blocks(rng, qtype, n_blocks, scale=None):
    """Random blocks of `qtype`; the f16 scales random finite halves, or uniform in +-scale."""
    elems, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for at in HALF_FIELDS[qtype]:
        if scale is None:
            halves = random_halves(rng, n_blocks)
        else:
            halves = rng.uniform(-scale, scale, n_blocks).astype(np.float16).view(np.uint16)
        blocks[:, at : at + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def block_goldens(rng):
    out = {}
    for qtype in HALF_FIELDS:
        blocks = random_blocks(rng, qtype, 12)
        values = quants.dequantize(blocks.reshape(1, -1), qtype).reshape(-1)
        out[f"{qtype.name}.random.bytes"] = blocks.reshape(-1)
        out[f"{qtype.name}.random.values"] = values.astype(np.float32)
        if qtype in QUANTISABLE:
            x = rng.standard_normal((4, 64)).astype(np.float32)
            q = quants.quantize(x, qtype)
            out[f"{qtype.name}.quantized.bytes"] = q.reshape(-1)
            out[f"{qtype.name}.quantized.values"] = (
                quants.dequantize(q, qtype).reshape(-1).astype(np.float32)
            )
    path = OUT / "blocks.safetensors"
    save_file(out, str(path))
    print(f"  wrote {rel(path)} ({path.stat().st_size} bytes, {len(out)} tensors)")


def write_gguf(path, tensors, prefix=""):
    """Writes (name, stored array, GGML type, original shape or None) as a Wan GGUF file."""
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for name, data, qtype, original in tensors:
        if original is not None:
            writer.add_array(f"comfy.gguf.orig_shape.{prefix}{name}", [int(d) for d in original])
        writer.add_tensor(prefix + name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"  wrote {rel(path)} ({path.stat().st_size} bytes, {len(tensors)} tensors)")


def read_back(path, prefix):
    """The file's tensors as gguf-py reads and dequantises them, under unprefixed names."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        field = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
        if field is not None:
            shape = tuple(int(field.parts[i][0]) for i in field.data)
        else:
            shape = tuple(int(d) for d in reversed(t.shape))
        out[t.name[len(prefix) :]] = np.ascontiguousarray(values.reshape(shape))
    return out, reader


def legacy_dit(weights):
    """Rows of 32 quantised as they are; other 2-D weights flattened to rows of 32 (with their
    shape recorded) and quantised, but for one kept BF16 and one F16."""
    tensors, cycle, halves = [], 0, [T.BF16, T.F16]
    for name, w in weights.items():
        if name == "patch_embedding.weight":
            tensors.append((name, w.reshape(-1, 64), T.F32, w.shape))
        elif w.ndim == 1 or (w.ndim == 3 and w.shape[0] == 1):  # vectors, modulation tables
            tensors.append((name, w, T.F32, None))
        elif w.ndim == 2 and w.shape[1] % 32 != 0 and halves:
            qtype = halves.pop(0)
            tensors.append((name, quants.quantize(w, qtype), qtype, None))
        elif w.ndim == 2:
            qtype = QUANTISABLE[::-1][cycle % len(QUANTISABLE)]
            cycle += 1
            original = None if w.shape[1] % 32 == 0 else w.shape
            rows = w if original is None else w.reshape(-1, 32)
            tensors.append((name, quants.quantize(rows, qtype), qtype, original))
        else:
            raise ValueError(f"{name}: unexpected shape {w.shape}")
    assert cycle >= len(QUANTISABLE), f"only {cycle} tensors were quantised"
    return tensors


def q8_0_dit(weights):
    """Q8_0 wherever a row is whole blocks of 32 (the weights vdit keeps quantised on the GPU),
    F16 for the other 2-D weights, F32 for vectors and tables."""
    tensors = []
    for name, w in weights.items():
        if name == "patch_embedding.weight":
            tensors.append((name, w.reshape(-1, 64), T.F32, w.shape))
        elif w.ndim == 2 and w.shape[1] % 32 == 0:
            tensors.append((name, quants.quantize(w, T.Q8_0), T.Q8_0, None))
        elif w.ndim == 2:
            tensors.append((name, quants.quantize(w, T.F16), T.F16, None))
        else:
            tensors.append((name, w, T.F32, None))
    assert sum(t[2] == T.Q8_0 for t in tensors) >= 3, "too few Q8_0 tensors"
    return tensors


def kquant_dit(weights, rng):
    tensors, cycle = [], 0
    for name, w in weights.items():
        if w.ndim >= 2 and w.size % 256 == 0 and w.shape[0] > 1:
            qtype = K_QUANTS[cycle % len(K_QUANTS)]
            cycle += 1
            _, size = gguf.GGML_QUANT_SIZES[qtype]
            blocks = random_blocks(rng, qtype, w.size // 256, scale=0.3 / K_RANGE[qtype])
            tensors.append((name, blocks.reshape(w.size // 256, size), qtype, w.shape))
        elif w.ndim <= 1 or (w.ndim == 3 and w.shape[0] == 1):
            tensors.append((name, w, T.F32, None))
        else:
            tensors.append((name, w.astype(np.float16), T.F16, w.shape if w.ndim > 4 else None))
    assert cycle >= len(K_QUANTS), f"only {cycle} tensors could hold k-quants"
    return tensors


T5 = GOLDENS / "t5" / "text_encoder"
# transformers' UMT5 names -> llama.cpp's (per block, then the whole encoder).
T5_BLOCK_NAMES = {
    "layer.0.layer_norm": "attn_norm",
    "layer.0.SelfAttention.q": "attn_q",
    "layer.0.SelfAttention.k": "attn_k",
    "layer.0.SelfAttention.v": "attn_v",
    "layer.0.SelfAttention.o": "attn_o",
    "layer.0.SelfAttention.relative_attention_bias": "attn_rel_b",
    "layer.1.layer_norm": "ffn_norm",
    "layer.1.DenseReluDense.wi_0": "ffn_gate",
    "layer.1.DenseReluDense.wi_1": "ffn_up",
    "layer.1.DenseReluDense.wo": "ffn_down",
}


def llama_t5_name(name):
    if name == "shared.weight":
        return "token_embd.weight"
    if name == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    _, _, block, rest = name.split(".", 3)
    return f"enc.blk.{block}.{T5_BLOCK_NAMES[rest.removesuffix('.weight')]}.weight"


T5_TOKENIZER = GOLDENS / "t5" / "tokenizer" / "tokenizer.json"


def nfkc_normalizer_spec():
    """SentencePiece's builtin NFKC rule, compiled to its precompiled character map by training a
    throwaway model with it (the trainer is what compiles a rule)."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["ab ba abba"] * 8),
        model_writer=model,
        vocab_size=8,
        hard_vocab_limit=False,
        normalization_rule_name="nfkc",
        minloglevel=3,
    )
    proto = spm_model.ModelProto()
    proto.ParseFromString(model.getvalue())
    assert proto.normalizer_spec.precompiled_charsmap, "no character map compiled"
    return proto.normalizer_spec


def golden_sentencepiece_model():
    """The tiny golden tokenizer (tokenizer.json: Unigram pieces and scores, NFKC, Metaspace) as
    the SentencePiece model llama.cpp's converter reads: <pad> and </s> control pieces, <unk> the
    unknown piece, NFKC as SentencePiece's compiled rule."""
    tok = json.loads(T5_TOKENIZER.read_text())
    assert tok["model"]["type"] == "Unigram" and tok["model"]["unk_id"] == 2
    Piece = spm_model.ModelProto.SentencePiece
    proto = spm_model.ModelProto()
    for i, (piece, score) in enumerate(tok["model"]["vocab"]):
        kind = {0: Piece.CONTROL, 1: Piece.CONTROL, 2: Piece.UNKNOWN}.get(i, Piece.NORMAL)
        proto.pieces.add(piece=piece, score=score, type=kind)
    proto.trainer_spec.model_type = spm_model.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(proto.pieces)
    proto.trainer_spec.pad_id, proto.trainer_spec.eos_id, proto.trainer_spec.unk_id = 0, 1, 2
    proto.trainer_spec.bos_id = -1
    proto.normalizer_spec.CopyFrom(nfkc_normalizer_spec())
    # It must tokenize the golden prompts (cleaned as the reference does) as tokenizer.json did.
    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    for p in json.loads((GOLDENS / "t5" / "prompts.json").read_text()):
        ids = sp.EncodeAsIds(p["cleaned"])[:511] + [1]
        assert ids == p["ids"], f"the SentencePiece model tokenizes '{p['name']}' differently"
    return proto


def add_tokenizer(writer, proto, vocab_size):
    """Writes the tokenizer metadata the way llama.cpp's convert_hf_to_gguf.py does for a T5
    encoder (its T5EncoderModel.set_vocab): every piece with its score and type, then unused
    "[PAD<i>]" pieces up to the model's vocab_size, and the special ids of its config."""
    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for i in range(sp.vocab_size()):
        tokens[i] = sp.IdToPiece(i).encode()
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            types[i] = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            types[i] = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            types[i] = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            types[i] = gguf.TokenType.BYTE
        else:
            types[i] = gguf.TokenType.NORMAL
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    writer.add_remove_extra_whitespaces(proto.normalizer_spec.remove_extra_whitespaces)
    writer.add_precompiled_charsmap(proto.normalizer_spec.precompiled_charsmap)
    # gguf.SpecialVocab's ids for a T5 checkpoint: eos, unknown and padding (no bos).
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(2)
    writer.add_pad_token_id(0)


def umt5_goldens():
    weights = {}
    for shard in sorted(T5.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    config = json.loads((T5 / "config.json").read_text())
    proto = golden_sentencepiece_model()
    for quantised in [False, True]:
        name = "umt5_tiny_q8_0" if quantised else "umt5_tiny_f32"
        path = OUT / f"{name}.gguf"
        writer = gguf.GGUFWriter(str(path), arch="t5encoder")
        add_tokenizer(writer, proto, config["vocab_size"])
        copy = {}
        for hf_name, w in sorted(weights.items()):
            w = w.astype(np.float32)
            if not quantised or w.ndim == 1:
                data, qtype = w, T.F32
            elif w.shape[-1] % 32 == 0:
                data, qtype = quants.quantize(w, T.Q8_0), T.Q8_0
            else:
                data, qtype = w.astype(np.float16), T.F16
            writer.add_tensor(llama_t5_name(hf_name), data, raw_dtype=qtype)
            copy[hf_name] = np.ascontiguousarray(
                quants.dequantize(data, qtype).astype(np.float32).reshape(w.shape)
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        print(f"  wrote {rel(path)} ({path.stat().st_size} bytes)")
        if quantised:
            ref = OUT / f"{name}.dequantized.safetensors"
            save_file(copy, str(ref))
            print(f"  wrote {rel(ref)} ({ref.stat().st_size} bytes)")


def main():
    rng = np.random.default_rng(1605)
    OUT.mkdir(parents=True, exist_ok=True)
    block_goldens(rng)
    umt5_goldens()
    weights = {k: v.astype(np.float32) for k, v in sorted(load_file(str(TINY)).items())}
    summary = {
        "gguf": importlib.metadata.version("gguf"),
        "numpy": np.__version__,
        "sentencepiece": importlib.metadata.version("sentencepiece"),
    }
    for name, tensors, prefix in [
        ("legacy", legacy_dit(weights), ""),
        ("kquants", kquant_dit(weights, rng), "model.diffusion_model."),
        ("q8_0", q8_0_dit(weights), ""),
    ]:
        path = OUT / f"dit_tiny_{name}.gguf"
        write_gguf(path, tensors, prefix)
        values, _ = read_back(path, prefix)
        assert set(values) == set(weights), f"{path}: names differ from the golden weights"
        for k, v in values.items():
            assert v.shape == weights[k].shape, f"{path}:{k}: shape {v.shape}"
            assert np.isfinite(v).all(), f"{path}:{k}: non-finite values"
        ref = OUT / f"dit_tiny_{name}.dequantized.safetensors"
        save_file(values, str(ref))
        print(f"  wrote {rel(ref)} ({ref.stat().st_size} bytes)")
        types = {}
        for _, _, qtype, _ in tensors:
            types[qtype.name] = types.get(qtype.name, 0) + 1
        summary[name] = {"prefix": prefix, "tensor_types": types}
    # The tiny model's sizes cannot be read off its shapes (48 is no multiple of Wan's head
    # dimension of 128): its config.json, which a DiT file's folder may hold, goes beside.
    config = OUT / "config.json"
    shutil.copyfile(TINY.parent / "config.json", config)
    print(f"  wrote {rel(config)}")
    path = OUT / "goldens.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"  wrote {rel(path)}")


if __name__ == "__main__":
    main()
