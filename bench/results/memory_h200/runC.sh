set -u
source .device/env.sh
B=.device/bin/vdit; R=/tmp/resC; mkdir -p $R
TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
step() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $R/$name.mem 2>/dev/null &
  local pid=$!; local t=$SECONDS
  $TIME "$@" > $R/$name.txt 2>&1; echo "exit $? in $((SECONDS - t)) s" >> $R/$name.txt
  kill $pid; echo "$name: max GPU memory used $(sort -n $R/$name.mem | tail -1) MiB ($((SECONDS - t)) s)" | tee -a $R/summary.txt
  grep -E "forward:|weights:|GiB|checks" $R/$name.txt | tail -5; tar czf $OUT/runC.tgz -C $R .
}
step selftest $B selftest --json $R/selftest.json
step dit13b_q8 timeout 80 $B bench dit --random-weights --iters 1 --quantize q8_0 --json $R/dit13b_q8.json
step dit13b_dense timeout 60 $B bench dit --random-weights --iters 1 --no-profile --json $R/dit13b_dense.json
step generate timeout 90 $B bench generate --random-weights --steps 2 --vae-tile 32,8 --json $R/generate.json
step dit14b_q8 timeout 170 $B bench dit --config wan2.1-t2v-14b --random-weights --iters 1 --no-profile --quantize q8_0 --json $R/dit14b_q8.json
tar czf $OUT/runC.tgz -C $R .
