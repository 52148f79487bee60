#!/usr/bin/env bash
# Re-runs every headline cell of issue 21's table, for README "Performance", in about 12 minutes
# (hard cap 16): inference images and texts at batch 1 and 64 vs HF AlignModel, the input pipeline
# vs decode_jpeg on the web-sized and the small mix (1 thread and all cores, with the
# before-variants and each stage's share), training vs open_clip with the matmul limit, and the
# training step profile. Every script appends its rows to benchmarks/RESULTS.md with the load
# (benchmarks/common.py): rows that started above a 1-minute load of 2, or during which other
# processes used more than half a core, are marked "(loaded)" and are not headline figures. The
# opt-in bf16 rows are not headline cells: bench_inference.py --bf16, bench_train.py --bf16.
#
#   bash benchmarks/quiet_headlines.sh            # refuses to start at a 1-minute load above 2
#   FORCE=1 bash benchmarks/quiet_headlines.sh    # run anyway (rows come out marked as loaded)
#
# bench_train.py needs open_clip, timm, ftfy and torchvision installed aside (README,
# "Performance"); ALIGN_TF_BENCH_VENDOR points elsewhere than ~/.cache/align_tf_bench/vendor.
set -uo pipefail
cd "$(dirname "$0")/.."
vendor=${ALIGN_TF_BENCH_VENDOR:-$HOME/.cache/align_tf_bench/vendor}
load=$(cut -d' ' -f1 /proc/loadavg)
if awk "BEGIN { exit !($load > 2) }" && [ -z "${FORCE:-}" ]; then
  echo "quiet_headlines.sh: 1-minute load is $load (> 2): headline figures need a quiet" \
       "machine; wait, or set FORCE=1 to record loaded rows" >&2
  exit 1
fi
if ! PYTHONPATH="$vendor" python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('open_clip') and u.find_spec('torchvision')))"; then
  echo "quiet_headlines.sh: open_clip or torchvision ($vendor) is not installed; install them" \
       "first (README, Performance)" >&2
  exit 1
fi
start=$SECONDS
failed=()
run() {  # run SECONDS NAME COMMAND...: one benchmark under a time limit; go on if it fails
  local limit=$1 name=$2
  shift 2
  # The previous benchmark's own threads still weigh in the 1-minute load: let it settle (at
  # most 2 minutes), so that each run starts quiet (benchmarks/common.py marks the others).
  local waited=0
  while awk "BEGIN { exit !($(cut -d' ' -f1 /proc/loadavg) > 1.5) }" && [ $waited -lt 120 ]; do
    sleep 5
    waited=$((waited + 5))
  done
  echo "== $name (load $(cut -d' ' -f1-2 /proc/loadavg), $((SECONDS - start)) s in)"
  timeout "$limit" "$@" || failed+=("$name")
}
run 330 inference python benchmarks/bench_inference.py --batch_sizes=1,64
run 300 input_pipeline python benchmarks/bench_input_pipeline.py --before --stages --threads=1,2 \
  --seconds=1.2 --repeats=4
run 200 train env PYTHONPATH="$vendor" python benchmarks/bench_train.py --repeats=12
run 90 train_profile python benchmarks/profile_train_step.py
echo "quiet_headlines.sh: $((SECONDS - start)) s, load now $(cut -d' ' -f1-2 /proc/loadavg)" \
     "${failed[*]:+; FAILED: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
