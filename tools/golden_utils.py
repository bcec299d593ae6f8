"""Small helpers shared by the golden-file generators in this folder.

Every generator writes plain files under assets/goldens/ and prints what it wrote, so a
run's log is a readable inventory of the goldens.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# The repository root is the parent of tools/; goldens live under assets/goldens/.
REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDENS = REPO_ROOT / "assets" / "goldens"


def setup_torch():
    """Make runs reproducible and keep every computation in float32 on the CPU."""
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    # A fixed thread count keeps the order of floating-point reductions the same from run to run.
    torch.set_num_threads(1)


def rel(path):
    """A path relative to the repository root, for printing."""
    return os.path.relpath(path, REPO_ROOT)


def describe(name, t):
    stats = ""
    if t.is_floating_point() and t.numel() > 0:
        f = t.double()
        stats = f"  mean {f.mean().item():+.4f} std {f.std().item() if t.numel() > 1 else 0.0:.4f}"
    return f"    {name:<40} {str(tuple(t.shape)):<22} {str(t.dtype).replace('torch.', ''):<8}{stats}"


def save_tensors(path, tensors, dtype=torch.float32, metadata=None, list_tensors=True):
    """Save a dict of tensors as safetensors (contiguous, converted to `dtype`) and print them.

    Weight files are printed as one line (list_tensors=False); inputs and outputs tensor by tensor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.contiguous().clone()
    save_file(out, str(path), metadata=metadata)
    print(f"  wrote {rel(path)} ({path.stat().st_size} bytes, {len(out)} tensors)")
    if list_tensors:
        for name in out:
            print(describe(name, out[name]))
    return out


def save_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"  wrote {rel(path)}")


def check_roundtrip(path, expected):
    """Load a written safetensors file back and check names, shapes, values and finiteness."""
    loaded = load_file(str(path))
    assert set(loaded) == set(expected), f"{path}: tensor names differ after reload"
    for name, t in loaded.items():
        assert t.shape == expected[name].shape, f"{path}:{name}: shape changed"
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{path}:{name}: non-finite values"
        assert torch.equal(t, expected[name]), f"{path}:{name}: values changed after reload"


def rel_l2(a, b):
    """Relative L2 error ||a - b|| / ||b||, computed in float64."""
    a = a.double()
    b = b.double()
    return ((a - b).norm() / b.norm()).item()


def versions():
    import diffusers
    import numpy
    import safetensors
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
