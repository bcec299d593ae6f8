set -u
source .device/env.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl && export PYTHONPATH=/tmp/site
B=.device/bin/vdit; R=/tmp/resB1; mkdir -p $R
TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
step() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $R/$name.mem 2>/dev/null &
  local pid=$!; local t=$SECONDS
  $TIME "$@" > $R/$name.txt 2>&1; echo "exit $? in $((SECONDS - t)) s" >> $R/$name.txt
  kill $pid; echo "$name: max GPU memory used $(sort -n $R/$name.mem | tail -1) MiB" | tee -a $R/summary.txt
  tail -4 $R/$name.txt; tar czf $OUT/runB1.tgz -C $R .
}
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits > $R/idle.mem
step dit14b_resident timeout 230 $B bench dit --config wan2.1-t2v-14b --random-weights --iters 1 --no-profile --json $R/dit14b_resident.json
step dit14b_offload_lora32 timeout 250 $B bench dit --config wan2.1-t2v-14b --random-weights --iters 1 --no-profile --offload --random-lora 32 --json $R/dit14b_offload_lora32.json
step torch14b timeout 100 python3 bench/torch_dit.py --out $R/torch14b --config 14b --reference-only
cp $R/torch14b/torch_dit.json $R/torch14b.json 2>/dev/null; rm -rf $R/torch14b
tar czf $OUT/runB1.tgz -C $R .
