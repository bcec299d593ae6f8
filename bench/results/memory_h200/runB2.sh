set -u
source .device/env.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl && export PYTHONPATH=/tmp/site
B=.device/bin/vdit; R=/tmp/resB2; mkdir -p $R
TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
step() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $R/$name.mem 2>/dev/null &
  local pid=$!; local t=$SECONDS
  $TIME "$@" > $R/$name.txt 2>&1; echo "exit $? in $((SECONDS - t)) s" >> $R/$name.txt
  kill $pid; echo "$name: max GPU memory used $(sort -n $R/$name.mem | tail -1) MiB" | tee -a $R/summary.txt
  tail -4 $R/$name.txt; tar czf $OUT/runB2.tgz -C $R .
}
step dit13b_resident timeout 60 $B bench dit --random-weights --iters 1 --no-profile --json $R/dit13b_resident.json
step dit13b_offload timeout 60 $B bench dit --random-weights --iters 1 --no-profile --offload --json $R/dit13b_offload.json
step dit13b_lora32 timeout 60 $B bench dit --random-weights --iters 1 --no-profile --random-lora 32 --json $R/dit13b_lora32.json
step vae720 timeout 150 python3 bench/torch_vae.py --out $R/torch_vae720 --latent 21x90x160 --vdit $B
cp $R/torch_vae720/torch_vae.json $R/torch_vae720.json 2>/dev/null; rm -rf $R/torch_vae720
step vae720_tiled timeout 120 $B bench vae --latent-height 90 --latent-width 160 --vae-tile 32,8 --json $R/vae720_tiled.json
step vae720_whole timeout 90 $B bench vae --latent-height 90 --latent-width 160 --json $R/vae720_whole.json
tar czf $OUT/runB2.tgz -C $R .
