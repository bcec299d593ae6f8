#!/usr/bin/env bash
# Attention surgery on the embedded default model, as bench/SURGERY.md reports it:
# distil, plan at a budget, and compare the planned and a uniform plan with softmax.
# Usage: bench/surgery_default_model.sh [OUT_DIR]   (vdit built in target/release or on PATH)
set -euo pipefail
out=${1:-surgery-default}
vdit=${VDIT:-$(command -v vdit || echo target/release/vdit)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cp "$here/surgery_prompts/train.txt" "$here/surgery_prompts/held_out.txt" "$out/"
cd "$out"
"$vdit" distill --prompts train.txt --held-out 2 --steps 200 --output run
"$vdit" plan --errors run/errors.json --budget 0.8 --output plan80.json
echo '{"default": "hybrid:4", "feature_map": "hedgehog", "feature_weights": "run/features.safetensors"}' > uniform80.json
for p in plan80 uniform80; do
    "$vdit" compare --attention-plan $p.json --prompts held_out.txt --json $p.compare.json
done
