"""Does an attention plan keep the default model's videos recognisable?

Generates every prompt of PROMPTS at every seed with each plan (`softmax` for none) as PNG
frames under DIR/videos/, then judges each video with tools/shape_metrics.judge (the prompt's
object colour on its background, moving its way: the held-out test's measurement) and writes
the pass counts per plan as JSON.

Usage: python3 bench/surgery_judge.py VDIT FRAMES SEEDS PROMPTS DIR OUT_JSON PLAN...
(SEEDS a comma list; PLAN `softmax` or a plan file). Needs numpy, scipy and pillow.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from shape_metrics import judge  # noqa: E402

PROMPT = re.compile(r"an? (\w+) (\w+) moving (\w+) on an? (\w+) background")


def frames_of(folder):
    files = sorted(folder.glob("frame_*.png"))
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) / 255 for f in files])


def main():
    vdit, frames, seeds, prompts, out_dir, out_json, *plans = sys.argv[1:]
    seeds = [int(s) for s in seeds.split(",")]
    prompts = [p.strip() for p in Path(prompts).read_text().splitlines() if p.strip()]
    results = {}
    for plan in plans:
        name = "softmax" if plan == "softmax" else Path(plan).stem
        videos = []
        for i, prompt in enumerate(prompts):
            combo = PROMPT.fullmatch(prompt)
            if combo is None:
                sys.exit(f"{prompt!r} is not of the default model's template")
            for seed in seeds:
                folder = Path(out_dir) / "videos" / name / f"{i}.{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                cmd = [vdit, "generate", "--quiet", "--prompt", prompt, "--seed", str(seed),
                       "--frames", frames, "--output", f"{folder}/"]
                if plan != "softmax":
                    cmd += ["--attention-plan", plan]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                verdict = judge(frames_of(folder), combo.groups())
                videos.append({"prompt": prompt, "seed": seed, **verdict})
        passed = sum(v["pass"] for v in videos)
        print(f"{name}: {passed} of {len(videos)} videos pass", file=sys.stderr)
        results[name] = {"passed": passed, "videos": videos}
    Path(out_json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
