#!/usr/bin/env bash
# One prepared GPU run (issue 15): the default CNN over 3 seeds, the speedrun config, airbench94_muon's own code on
# the same train/validation split, the GPU tests, and the training step's efficiency with a profile, all into OUT.
#
#   bash benchmarks/gpu_prepare.sh                  # here, once: fills .gpu/
#   bash benchmarks/gpu_run.sh OUT                  # on the GPU machine, about 7 minutes on an H100
#   QUICK=1 bash benchmarks/gpu_run.sh OUT          # dry run on a CPU: every step, tiny settings
#
# OUT gets five files: summary.md (the table), summary.json (every results.json and airbench's), all.log,
# profile.txt, machine.txt. A step that fails is logged and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_run.sh OUT}
QUICK=${QUICK:-0}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
[ -d .gpu ] || { echo "error: no .gpu/ folder: run benchmarks/gpu_prepare.sh first" >&2; exit 2; }
if ! python3 -c "import jsonargparse" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD   # the repo itself, not installed there
DATA=${DATA:-/tmp/cifar10-jpeg}
[ -d "$DATA/train" ] || { mkdir -p "$DATA" && tar -xzf .gpu/data.tar.gz -C "$DATA"; }
RUNS=/tmp/gpu_runs && rm -rf "$RUNS"
LOG="$OUT/all.log"

{ date -u; nvidia-smi 2>/dev/null || echo "no nvidia-smi"; nproc; cat .gpu/airbench_commit
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
} > "$OUT/machine.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, its output into all.log
    local name=$1 limit=$2 start=$SECONDS; shift 2
    echo "=== $name: $*" | tee -a "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s" | tee -a "$LOG"
}

if [ "$QUICK" = 1 ]; then  # a CPU dry run: a few steps of each, just to exercise every command
    ACC=cpu; TINY=(--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 2)
    SEEDS=(0); AB_RUNS=1; EFF=(--device cpu --steps 1)
else
    ACC=gpu; TINY=(); SEEDS=(0 1 2); AB_RUNS=5; EFF=(--device cuda --steps 20)
fi
COMMON=(--data.data_dir "$DATA" --trainer.accelerator "$ACC" --wandb false --trainer.enable_progress_bar false
        "${TINY[@]}")

step gpu_tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_slow_gpu.py
for seed in "${SEEDS[@]}"; do
    step "cnn_seed$seed" 150 python3 train.py --model cnn --seed_everything "$seed" "${COMMON[@]}" \
        --trainer.default_root_dir "$RUNS/cnn.yaml"
done
step speedrun 120 python3 train.py --model speedrun --seed_everything 0 "${COMMON[@]}" \
    --trainer.default_root_dir "$RUNS/speedrun.yaml"
step airbench 240 python3 benchmarks/airbench_anchor.py --airbench .gpu/airbench94_muon.py --data_dir "$DATA" \
    --runs "$AB_RUNS" --out "$OUT/airbench"
step efficiency 90 python3 benchmarks/efficiency.py --model cnn speedrun "${EFF[@]}" --profile "$OUT/profile.txt"

python3 - "$RUNS" "$OUT" <<'PY' >> "$LOG" 2>&1
import json, statistics, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
results = {f"{p.parents[2].name} {p.parent.name}": json.loads(p.read_text()) for p in sorted(runs.glob("*/*/*/results.json"))}
airbench_file = out / "airbench" / "airbench.json"
airbench = json.loads(airbench_file.read_text()) if airbench_file.is_file() else None
(out / "summary.json").write_text(json.dumps({"runs": results, "airbench": airbench}, indent=2) + "\n")
lines = ["| run | seed | val/acc_best | train_seconds | wall_seconds | train img/s |", "| --- | --- | --- | --- | --- | --- |"]
for name, r in results.items():
    lines.append(f"| {name} | {r['seed']} | {r['val/acc_best']} | {r['train_seconds']} | {r['wall_seconds']} | {r['images_per_second']} |")
if airbench and "accs" in airbench:
    secs = [s for s in airbench["airbench_seconds"] if s is not None]
    lines.append(f"| airbench94_muon x{len(airbench['accs'])} | 0.. | {airbench['mean']:.4f} ± {airbench['std']:.4f} | "
                 f"{statistics.mean(secs) if secs else float('nan'):.2f} (its timer) | {statistics.mean(airbench['wall_seconds']):.2f} | |")
elif airbench:
    lines.append(f"| airbench94_muon | | {airbench.get('skipped')} | | | |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -rf "$OUT/airbench/airbench_work"
mv "$OUT/airbench/airbench.json" "$OUT/airbench.json" 2>/dev/null; rmdir "$OUT/airbench" 2>/dev/null
cat "$OUT/summary.md"
