#!/usr/bin/env python3
"""Goldens for vdit's fp8 weights: ml_dtypes (the float8 types of JAX and TensorFlow, pinned in
requirements.txt) encodes and decodes the values; the safetensors files are written by hand, as
safetensors' numpy API has no float8 types.

Writes assets/goldens/fp8/:
  float8.safetensors
      `e4m3fn.bytes` / `e5m2.bytes` (U8, all 256 codes) with `e4m3fn.values` / `e5m2.values`
      (F32, ml_dtypes' decoding; NaN where the code is NaN).
  dit_tiny_e4m3fn.safetensors
      The tiny DiT golden weights (dit/tiny/original), original names: every 2-D weight cast to
      F8_E4M3 (one to F8_E5M2), the rest F32, as ComfyUI's plain "fp8_e4m3fn" files are.
  dit_tiny_scaled_fp8.safetensors
      ComfyUI's scaled fp8 form, with the "model.diffusion_model." prefix: a `scaled_fp8` marker,
      each 2-D weight divided by a per-tensor `scale_weight` (F32 [1], max |w| / 448) and cast to
      F8_E4M3, an activation `scale_input` beside it.
  dit_tiny_weight_scale_fp8.safetensors
      The newer form: `weight_scale` (F32, shape []) and `input_scale` per layer, the layers
      listed in the header's `_quantization_metadata`.
  dit_tiny_<form>.dequantized.safetensors
      Each file's weights as ml_dtypes decodes them, times their scale in f32: loading either must
      give the same velocity.
  umt5_tiny_scaled_fp8.safetensors
      The tiny umT5 golden encoder (t5/text_encoder) in the form of ComfyUI's
      umt5_xxl_fp8_e4m3fn_scaled.safetensors: transformers' names, a `scaled_fp8` marker, each 2-D
      weight (the embedding included) F8_E4M3 with its `scale_weight`; beside its dequantised copy.
  config.json
      The tiny DiT's config, which vdit reads beside a DiT file.

Run from the repository root:  python tools/make_fp8_goldens.py
"""

import importlib.metadata
import json
import os
import shutil
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDENS = REPO_ROOT / "assets" / "goldens"
OUT = GOLDENS / "fp8"
TINY = GOLDENS / "dit" / "tiny" / "original" / "diffusion_pytorch_model.safetensors"
E4M3_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448

DTYPES = {np.float32: "F32", ml_dtypes.float8_e4m3fn: "F8_E4M3", ml_dtypes.float8_e5m2: "F8_E5M2"}


def rel(path):
    return os.path.relpath(path, REPO_ROOT)


def write_safetensors(path, tensors, metadata=None):
    """(name -> array of float32, float8_e4m3fn or float8_e5m2) as a safetensors file."""
    header, data = {}, b""
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {
            "dtype": DTYPES[a.dtype.type],
            "shape": list(a.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    print(f"  wrote {rel(path)} ({path.stat().st_size} bytes, {len(tensors)} tensors)")


def decode_table():
    codes = np.arange(256, dtype=np.uint8)
    out = {}
    for name, ty in [("e4m3fn", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2)]:
        out[f"{name}.bytes"] = codes
        out[f"{name}.values"] = codes.view(ty).astype(np.float32)
    path = OUT / "float8.safetensors"
    save_file(out, str(path))
    print(f"  wrote {rel(path)}")


def is_matrix(name, w):
    return w.ndim == 2


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    decode_table()
    weights = {k: v.astype(np.float32) for k, v in sorted(load_file(str(TINY)).items())}
    forms = {}

    # Plain casts, one tensor as E5M2.
    stored, copy, e5m2_done = {}, {}, False
    for name, w in weights.items():
        if is_matrix(name, w):
            ty = ml_dtypes.float8_e4m3fn if e5m2_done else ml_dtypes.float8_e5m2
            e5m2_done = True
            stored[name] = w.astype(ty)
            copy[name] = stored[name].astype(np.float32)
        else:
            stored[name] = copy[name] = w
    forms["e4m3fn"] = (stored, copy, None)

    # ComfyUI's scaled fp8, prefixed.
    prefix = "model.diffusion_model."
    stored, copy = {f"{prefix}scaled_fp8": np.zeros(0, dtype=ml_dtypes.float8_e4m3fn)}, {}
    for name, w in weights.items():
        if is_matrix(name, w):
            scale = np.float32(np.abs(w).max() / E4M3_MAX)
            layer = name.removesuffix(".weight")
            stored[prefix + name] = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            stored[f"{prefix}{layer}.scale_weight"] = np.array([scale], dtype=np.float32)
            stored[f"{prefix}{layer}.scale_input"] = np.array([1.0], dtype=np.float32)
            copy[name] = stored[prefix + name].astype(np.float32) * scale
        else:
            stored[prefix + name] = copy[name] = w
    forms["scaled_fp8"] = (stored, copy, None)

    # weight_scale with _quantization_metadata.
    stored, copy, layers = {}, {}, {}
    for name, w in weights.items():
        if is_matrix(name, w):
            scale = np.float32(np.abs(w).max() / E4M3_MAX)
            layer = name.removesuffix(".weight")
            stored[name] = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            stored[f"{layer}.weight_scale"] = np.array(scale, dtype=np.float32)
            stored[f"{layer}.input_scale"] = np.array(1.0, dtype=np.float32)
            layers[layer] = {"format": "float8_e4m3fn"}
            copy[name] = stored[name].astype(np.float32) * scale
        else:
            stored[name] = copy[name] = w
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    forms["weight_scale_fp8"] = (stored, copy, metadata)

    t5 = {}
    for shard in sorted((GOLDENS / "t5" / "text_encoder").glob("*.safetensors")):
        t5.update({k: v.astype(np.float32) for k, v in load_file(str(shard)).items()})
    stored, copy = {"scaled_fp8": np.zeros(0, dtype=ml_dtypes.float8_e4m3fn)}, {}
    for name, w in sorted(t5.items()):
        if w.ndim == 2:
            scale = np.float32(np.abs(w).max() / E4M3_MAX)
            layer = name.removesuffix(".weight")
            stored[name] = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            stored[f"{layer}.scale_weight"] = np.array([scale], dtype=np.float32)
            copy[name] = stored[name].astype(np.float32) * scale
        else:
            stored[name] = copy[name] = w
    write_safetensors(OUT / "umt5_tiny_scaled_fp8.safetensors", stored)
    save_file(copy, str(OUT / "umt5_tiny_scaled_fp8.dequantized.safetensors"))

    for form, (stored, copy, metadata) in forms.items():
        write_safetensors(OUT / f"dit_tiny_{form}.safetensors", stored, metadata)
        assert set(copy) == set(weights)
        assert all(np.isfinite(v).all() for v in copy.values())
        ref = OUT / f"dit_tiny_{form}.dequantized.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in copy.items()}, str(ref))
        print(f"  wrote {rel(ref)}")
    shutil.copyfile(TINY.parent / "config.json", OUT / "config.json")
    print(f"  wrote {rel(OUT / 'config.json')}")
    versions = {p: importlib.metadata.version(p) for p in ["ml_dtypes", "numpy", "safetensors"]}
    (OUT / "goldens.json").write_text(json.dumps({"versions": versions}, indent=2) + "\n")
    print(f"  wrote {rel(OUT / 'goldens.json')}")


if __name__ == "__main__":
    main()
