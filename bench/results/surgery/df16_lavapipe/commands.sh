#!/usr/bin/env bash
# The steps behind bench/SURGERY.md's "DF = 16 on lavapipe" section, run from a folder holding
# train.txt (the first 8 lines of bench/surgery_prompts/train.txt; the last 2 are held out) and
# compare.txt (the first 4 lines of bench/surgery_prompts/held_out.txt).
set -u
V=vdit
start=$(date +%s)
$V distill --prompts train.txt --held-out 2 --steps 800 --feature-dim 16 --modes hybrid:2,hybrid:3,linear --no-output-errors --output run --quiet > distill.log 2>&1
echo "distill done $(( $(date +%s) - start )) s" >> time.log
$V plan --errors run/errors.json --budget 0.5 --objective attention --output plan0.5.json > plan.log 2>&1
python3 bench/surgery_judge.py $V 17 0 compare.txt . judge_a.json softmax plan0.5.json > judge_a.log 2>&1
echo "judge done $(( $(date +%s) - start )) s" >> time.log
$V distill --student plan0.5.json --prompts train.txt --held-out 2 --steps 400 --no-output-errors --output student --quiet > student.log 2>&1
python3 -c "import json; p=json.load(open('student/plan.json')); p['feature_weights']='student/features.safetensors'; json.dump(p, open('student0.5.json','w'))"
python3 bench/surgery_judge.py $V 17 0 compare.txt . judge_b.json student0.5.json > judge_b.log 2>&1
echo "all done $(( $(date +%s) - start )) s" >> time.log
