#!/usr/bin/env bash
# Attention surgery on the embedded default model, as bench/SURGERY.md reports it: distil every
# (block, mode) pair, plan at two budgets, and compare each plan and a uniform plan of no greater
# cost with softmax on the held-out prompts.
# Usage: bench/surgery_default_model.sh [OUT_DIR]   (vdit built in target/release or on PATH;
# python3 picks the uniform plans from errors.json). FRAMES (default 9) sets the clip length.
set -euo pipefail
out=${1:-surgery-default}
vdit=${VDIT:-$(command -v vdit || echo "$PWD/target/release/vdit")}
frames=${FRAMES:-9}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cp "$here/surgery_prompts/train.txt" "$here/surgery_prompts/held_out.txt" "$out/"
cd "$out"
head -n 8 held_out.txt > compare.txt
"$vdit" distill --prompts train.txt --held-out 2 --steps 200 --frames "$frames" --output run
for budget in 0.75 0.6; do
    "$vdit" plan --errors run/errors.json --budget "$budget" --output "plan$budget.json"
    # The uniform plan: the one mode on every block with the largest cost within the budget.
    python3 - "$budget" > "uniform$budget.json" <<'PY'
import json, sys
budget = float(sys.argv[1])
layers = json.load(open("run/errors.json"))["layers"]
soft = sum(o["cost"] for l in layers for o in l["options"] if o["mode"] == "softmax")
modes = {o["mode"] for o in layers[0]["options"]}
cost = {m: sum(o["cost"] for l in layers for o in l["options"] if o["mode"] == m) / soft for m in modes}
mode = max((m for m in modes if cost[m] <= budget), key=lambda m: cost[m])
print(f"uniform plan at budget {budget}: {mode} on every block, {cost[mode]:.4f} of softmax",
      file=sys.stderr)
print(json.dumps({"default": mode, "feature_map": "hedgehog",
                  "feature_weights": "run/features.safetensors"}))
PY
    for p in "plan$budget" "uniform$budget"; do
        "$vdit" compare --attention-plan "$p.json" --prompts compare.txt --frames "$frames" \
            --json "$p.compare.json"
    done
done
