#!/usr/bin/env bash
# Every row of bench/RESULTS.md in one command: vdit and its PyTorch references on this GPU.
#
# Usage (on the GPU machine, from the project root, after `cargo build --release`; PyTorch with
# CUDA and diffusers importable for the reference rows):
#   bench/run_gpu.sh DIR            # then: python3 bench/make_results.py DIR
# Environment: VDIT (the vdit binary, default target/release/vdit),
# SKIP (space-separated step names to leave out: kernels attention dit torch_dit vae generate
# portable), PACK (a .tgz rewritten with DIR after every step, so a cut-off run keeps its results).
set -u
DIR=${1:?usage: bench/run_gpu.sh DIR}
B=${VDIT:-target/release/vdit}
mkdir -p "$DIR"
LOG="$DIR/log.txt"
skip() { case " ${SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }
pack() { if [ -n "${PACK:-}" ]; then tar czf "$PACK" -C "$DIR" .; fi; }
run() {
  echo "\$ $*" >>"$LOG"
  local t=$SECONDS
  "$@" >>"$LOG" 2>&1
  echo "  (exit $?, $((SECONDS - t)) s)" >>"$LOG"
  pack
}

{ "$B" info; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u +%F; } >"$DIR/info.txt" 2>&1
# Every kernel variant against the CPU reference before anything is timed.
"$B" selftest --json "$DIR/selftest.json" >"$DIR/selftest.txt" 2>&1 || echo "selftest FAILED: see $DIR/selftest.txt" >>"$LOG"

if ! skip kernels; then
  run "$B" bench kernels --iters 3 --json "$DIR/kernels.json"
  run "$B" --no-coop bench kernels --precision f16 --filter matmul --iters 3 --json "$DIR/kernels_no_coop.json"
  run python3 bench/torch_matmul.py --json "$DIR/torch_matmul.json"
fi
if ! skip attention; then
  run "$B" bench attention --mode softmax --tokens 32760 --iters 3 --json "$DIR/attention.json"
  run "$B" --no-coop bench attention --mode softmax --tokens 32760 --iters 1 --json "$DIR/attention_no_coop.json"
  run python3 bench/attention_torch.py --tokens 32760 --precision bf16 --json "$DIR/torch_attention.json"
fi
if ! skip dit; then
  run "$B" bench dit --random-weights --attention softmax --iters 1 --json "$DIR/dit_softmax.json"
  run "$B" bench dit --random-weights --attention hybrid:2 --blocks 15 --iters 1 --json "$DIR/dit_hybrid.json"
  run "$B" bench dit --random-weights --attention linear --iters 1 --json "$DIR/dit_linear.json"
fi
if ! skip torch_dit; then
  run python3 bench/torch_dit.py --out /tmp/vdit_torch_dit --vdit "$B" --vdit-precisions f16
  cp /tmp/vdit_torch_dit/torch_dit.json "$DIR/torch_dit.json" 2>>"$LOG"
fi
if ! skip vae; then
  run python3 bench/torch_vae.py --out /tmp/vdit_torch_vae --vdit "$B"
  cp /tmp/vdit_torch_vae/torch_vae.json "$DIR/torch_vae.json" 2>>"$LOG"
  run "$B" bench vae --json "$DIR/vae.json"
  run "$B" bench vae --vae-tile 32,8 --json "$DIR/vae_tiled.json"
fi
if ! skip generate; then
  run "$B" bench generate --random-weights --steps 2 --json "$DIR/generate.json"
  # 50 steps end to end beside diffusers' WanPipeline, on a clip short enough to measure whole.
  run "$B" bench generate --random-weights --steps 50 --frames 17 --json "$DIR/generate50.json"
  run python3 bench/torch_generate.py --out /tmp/vdit_torch_generate --steps 50 --frames 17
  cp /tmp/vdit_torch_generate/torch_generate.json "$DIR/torch_generate.json" 2>>"$LOG"
fi
if ! skip portable; then
  run "$B" --no-coop bench dit --random-weights --attention linear --iters 1 --json "$DIR/dit_linear_no_coop.json"
fi
echo "done: $DIR" >>"$LOG"
pack
