#!/usr/bin/env bash
# The memory rows of bench/RESULTS.md (offload, LoRA merging, Q8_0 and Q4_K weights, Wan 14B, 720p
# decode): each step's output, and the most GPU memory nvidia-smi reported while it ran.
#
# Usage (on an NVIDIA GPU machine, from the project root, after `cargo build --release`;
# PyTorch with CUDA and diffusers importable for the reference rows):
#   bench/run_memory.sh DIR
# Environment: VDIT (the vdit binary, default target/release/vdit), SKIP (space-separated step
# names to leave out), PACK (a .tgz rewritten with DIR after every step).
set -u
DIR=${1:?usage: bench/run_memory.sh DIR}
B=${VDIT:-target/release/vdit}
mkdir -p "$DIR"
TIME=""
[ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
step() {
  local name=$1 limit=$2
  shift 2
  case " ${SKIP:-} " in *" $name "*) return ;; esac
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$DIR/$name.mem" 2>/dev/null &
  local sampler=$! t=$SECONDS
  $TIME timeout "$limit" "$@" >"$DIR/$name.txt" 2>&1
  echo "exit $? in $((SECONDS - t)) s" >>"$DIR/$name.txt"
  kill $sampler 2>/dev/null
  local peak
  peak=$(sort -n "$DIR/$name.mem" | tail -1)
  echo "$name: max GPU memory used ${peak:-(no nvidia-smi samples)} MiB ($((SECONDS - t)) s)" >>"$DIR/summary.txt"
  if [ -n "${PACK:-}" ]; then tar czf "$PACK" -C "$DIR" .; fi
}
B14=(--config wan2.1-t2v-14b --random-weights --iters 1 --no-profile)
step dit14b_resident 230 "$B" bench dit "${B14[@]}" --json "$DIR/dit14b_resident.json"
step dit14b_offload_lora32 250 "$B" bench dit "${B14[@]}" --offload --random-lora 32 --json "$DIR/dit14b_offload_lora32.json"
step dit14b_q8 300 "$B" bench dit "${B14[@]}" --quantize q8_0 --json "$DIR/dit14b_q8.json"
step dit14b_q4k 300 "$B" bench dit "${B14[@]}" --quantize q4_k --json "$DIR/dit14b_q4k.json"
step torch14b 100 python3 bench/torch_dit.py --out "$DIR/torch14b" --config 14b --reference-only
B13=(--random-weights --iters 1 --no-profile)
step dit13b_resident 60 "$B" bench dit "${B13[@]}" --json "$DIR/dit13b_resident.json"
step dit13b_offload 60 "$B" bench dit "${B13[@]}" --offload --json "$DIR/dit13b_offload.json"
step dit13b_lora32 60 "$B" bench dit "${B13[@]}" --random-lora 32 --json "$DIR/dit13b_lora32.json"
step dit13b_q8 80 "$B" bench dit --random-weights --iters 1 --quantize q8_0 --json "$DIR/dit13b_q8.json"
step dit13b_q4k 80 "$B" bench dit --random-weights --iters 1 --quantize q4_k --json "$DIR/dit13b_q4k.json"
step generate 90 "$B" bench generate --random-weights --steps 2 --vae-tile 32,8 --json "$DIR/generate.json"
step vae720 150 python3 bench/torch_vae.py --out "$DIR/torch_vae720" --latent 21x90x160 --vdit "$B"
step vae720_tiled 120 "$B" bench vae --latent-height 90 --latent-width 160 --vae-tile 32,8 --json "$DIR/vae720_tiled.json"
step vae720_whole 200 "$B" bench vae --latent-height 90 --latent-width 160 --json "$DIR/vae720_whole.json"
echo "done: $DIR" >>"$DIR/summary.txt"
if [ -n "${PACK:-}" ]; then tar czf "$PACK" -C "$DIR" .; fi
