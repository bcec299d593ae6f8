"""The default model's world (palettes, prompts, held-out combinations) and how a video of it is
judged: does it show the prompt's object colour on the prompt's background, moving the prompt's way?

The same measurement is written independently in Rust in tests/default_model.rs, which judges the
videos vdit generates; this one judges diffusers' videos while the model is trained and chosen.

A video passes when
  - background: in at least 80% of frames, the median colour of the 2-pixel frame border is
    nearest (RGB) to the prompt's background among BACKGROUNDS;
  - object: in at least 80% of frames, the largest 4-connected region of pixels farther than
    OBJECT_DISTANCE from that border colour covers at least MIN_AREA pixels (and at most 40% of
    the frame), and its mean colour is nearest to the prompt's colour among COLORS;
  - motion: the least-squares line through that region's centroids moves at least MIN_TRAVEL
    pixels over the clip along the prompt's direction, with the right sign, and at least twice as
    far along it as across it.
"""

import numpy as np
from scipy import ndimage

COLORS = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.60, 0.20, 0.85),
    "orange": (1.00, 0.55, 0.05),
}
BACKGROUNDS = {
    "black": (0.04, 0.04, 0.04),
    "gray": (0.50, 0.50, 0.50),
    "blue": (0.10, 0.18, 0.55),
    "green": (0.10, 0.45, 0.15),
    "white": (0.96, 0.96, 0.96),
}
SHAPES = ["ball", "square", "triangle", "ring"]
DIRECTIONS = ["left", "right", "up", "down"]

# Never rendered for training: every colour, shape, direction and background appears here.
HELD_OUT = [
    ("red", "triangle", "up", "gray"),
    ("green", "ring", "left", "black"),
    ("blue", "ball", "down", "white"),
    ("yellow", "square", "right", "blue"),
    ("white", "triangle", "left", "green"),
    ("purple", "ring", "right", "gray"),
    ("orange", "ball", "up", "black"),
    ("red", "square", "down", "green"),
    ("green", "ball", "right", "white"),
    ("blue", "ring", "up", "gray"),
    ("yellow", "triangle", "down", "black"),
    ("purple", "square", "left", "white"),
]

_TOWARDS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}


def prompt_text(color, shape, direction, background, phrasing=0):
    """Phrasing 0 is the template every user is told about; 1 and 2 are variants trained on too."""
    if phrasing == 0:
        return f"a {color} {shape} moving {direction} on a {background} background"
    if phrasing == 1:
        return f"a {color} {shape} that moves {_TOWARDS[direction]}, {background} background"
    return f"a {color} {shape} moving {_TOWARDS[direction]} over a {background} background"


OBJECT_DISTANCE = 0.3
MIN_AREA = 80
MIN_TRAVEL = 12.0
FRAME_SHARE = 0.8


def _nearest(rgb, palette):
    names = list(palette)
    d = [np.sum((np.asarray(palette[n]) - rgb) ** 2) for n in names]
    return names[int(np.argmin(d))]


def _largest_component(mask):
    """The largest 4-connected component of a boolean mask, as a boolean mask (None if empty)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def _border_colour(frame):
    border = np.concatenate([frame[:2].reshape(-1, 3), frame[-2:].reshape(-1, 3),
                             frame[:, :2].reshape(-1, 3), frame[:, -2:].reshape(-1, 3)])
    return np.median(border, axis=0)


def judge(frames, combo):
    """frames: [F, H, W, 3] floats in [0, 1]. Returns {"pass", "why", measurements}."""
    color, _shape, direction, background = combo
    frames = np.asarray(frames, dtype=np.float64)
    f, h, w, _ = frames.shape
    bg_ok, obj_ok, track = 0, 0, []
    for t, frame in enumerate(frames):
        bg = _border_colour(frame)
        bg_ok += _nearest(bg, BACKGROUNDS) == background
        region = _largest_component(np.sqrt(np.sum((frame - bg) ** 2, axis=-1)) > OBJECT_DISTANCE)
        if region is None:
            continue
        area = int(region.sum())
        if area < MIN_AREA or area > 0.4 * h * w:
            continue
        obj_ok += _nearest(frame[region].mean(axis=0), COLORS) == color
        ys, xs = np.nonzero(region)
        track.append((t, xs.mean(), ys.mean()))
    why = []
    if bg_ok < FRAME_SHARE * f:
        why.append(f"background {background} in {bg_ok}/{f} frames")
    if obj_ok < FRAME_SHARE * f:
        why.append(f"{color} object in {obj_ok}/{f} frames")
    along, across = 0.0, 0.0
    if len(track) >= 3:
        ts, xs, ys = (np.array(c, dtype=np.float64) for c in zip(*track))
        dx = np.polyfit(ts, xs, 1)[0] * (f - 1)
        dy = np.polyfit(ts, ys, 1)[0] * (f - 1)
        along = float({"right": dx, "left": -dx, "down": dy, "up": -dy}[direction])
        across = float(dy if direction in ("left", "right") else dx)
    if not (along >= MIN_TRAVEL and along >= 2 * abs(across)):
        why.append(f"moves {along:+.1f} px {direction} and {across:+.1f} px across")
    return {"pass": not why, "why": "; ".join(why), "background_frames": bg_ok,
            "object_frames": obj_ok, "travel": round(along, 2), "travel_across": round(across, 2)}
