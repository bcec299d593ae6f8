#!/usr/bin/env bash
# Attention surgery on the embedded default model, as bench/SURGERY.md reports it: distil every
# (block, mode) pair, plan at two budgets, and compare each plan and a uniform plan of no greater
# cost with softmax on the held-out prompts.
# Usage: bench/surgery_default_model.sh [OUT_DIR]   (vdit built in target/release or on PATH;
# python3 picks the uniform plans from errors.json). FRAMES (default: the model's 17) sets the clip
# length, STEPS (default 2000) and LR (default 1e-3) the optimiser steps per pair and its learning
# rate, BUDGETS (default "0.75 0.5") the plans, SEEDS (default 0,1) the compared videos' noise,
# FEATURE_MAP (default hedgehog; or poly, with POWERS, default 2), FEATURE_DIM (default 16;
# empty for the head size) and MODES (default hybrid:2,hybrid:3,hybrid:4,linear; empty for vdit
# distill's) the trained maps. Last,
# bench/surgery_judge.py judges the softmax and planned videos (judge.json; needs numpy, scipy
# and pillow).
set -euo pipefail
out=${1:-surgery-default}
vdit=${VDIT:-$(command -v vdit || echo "$PWD/target/release/vdit")}
frames=${FRAMES:-17}
steps=${STEPS:-2000}
lr=${LR:-1e-3}
budgets=${BUDGETS:-0.75 0.5}
seeds=${SEEDS:-0,1}
feature_map=${FEATURE_MAP:-hedgehog}
powers=${POWERS:-2}
maps=(--feature-map "$feature_map" --powers "$powers")
feature_dim=${FEATURE_DIM-16}
modes=${MODES-hybrid:2,hybrid:3,hybrid:4,linear}
[[ -n $feature_dim ]] && maps+=(--feature-dim "$feature_dim")
[[ -n $modes ]] && maps+=(--modes "$modes")
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cp "$here/surgery_prompts/train.txt" "$here/surgery_prompts/held_out.txt" "$out/"
cd "$out"
head -n 8 held_out.txt > compare.txt
"$vdit" distill --prompts train.txt --held-out 4 --steps "$steps" --lr "$lr" --frames "$frames" \
    "${maps[@]}" --output run
for budget in $budgets; do
    # The default objective (the summed attention-output errors) and each option's measured
    # effect on the held-out latents, for comparison.
    "$vdit" plan --errors run/errors.json --budget "$budget" --output "plan$budget.json"
    "$vdit" plan --errors run/errors.json --budget "$budget" --objective output \
        --output "output$budget.json"
    # The uniform plan: the one mode on every block with the largest cost within the budget.
    python3 - "$budget" > "uniform$budget.json" <<'PY'
import json, sys
budget = float(sys.argv[1])
table = json.load(open("run/errors.json"))
layers = table["layers"]
soft = sum(o["cost"] for l in layers for o in l["options"] if o["mode"] == "softmax")
modes = {o["mode"] for o in layers[0]["options"]}
cost = {m: sum(o["cost"] for l in layers for o in l["options"] if o["mode"] == m) / soft for m in modes}
mode = max((m for m in modes if cost[m] <= budget), key=lambda m: cost[m])
print(f"uniform plan at budget {budget}: {mode} on every block, {cost[mode]:.4f} of softmax",
      file=sys.stderr)
plan = {"default": mode, "feature_map": table["feature_map"],
        "feature_weights": "run/features.safetensors"}
if table.get("powers"):
    plan["powers"] = table["powers"]
print(json.dumps(plan))
PY
    for p in "plan$budget" "output$budget" "uniform$budget"; do
        "$vdit" compare --attention-plan "$p.json" --prompts compare.txt --seeds "$seeds" --frames "$frames" \
            --json "$p.compare.json"
    done
done
plans=()
for budget in $budgets; do plans+=("plan$budget.json" "output$budget.json" "uniform$budget.json"); done
python3 "$here/surgery_judge.py" "$vdit" "$frames" "$seeds" compare.txt . judge.json softmax "${plans[@]}"
