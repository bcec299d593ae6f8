#!/usr/bin/env bash
# The steps behind bench/SURGERY.md's "Output errors and student distillation" section, run from
# a folder holding train.txt (the first 8 lines of bench/surgery_prompts/train.txt; the last 2
# are held out) and compare.txt (the first 4 lines of bench/surgery_prompts/held_out.txt).
set -euo pipefail
vdit distill --prompts train.txt --held-out 2 --steps 800 --feature-dim 32 --modes hybrid:2,linear \
    --output run --quiet
for o in output attention; do
    vdit plan --errors run/errors.json --budget 0.5 --objective "$o" --output "${o}0.5.json"
done
vdit plan --errors run/errors.json --budget 0.75 --output output0.75.json
python3 bench/surgery_judge.py vdit 17 0 compare.txt . judge_a.json softmax output0.5.json
vdit distill --student output0.5.json --prompts train.txt --held-out 2 --steps 400 --no-output-errors \
    --output student --quiet
# student/plan.json names its maps relative to student/; the judge runs it from here.
python3 -c "import json; p=json.load(open('student/plan.json')); p['feature_weights']='student/features.safetensors'; json.dump(p, open('student0.5.json','w'))"
python3 bench/surgery_judge.py vdit 17 0 compare.txt . judge_b.json student0.5.json attention0.5.json
