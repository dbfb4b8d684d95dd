#!/usr/bin/env bash
# Every number of BENCHMARKS.md's "Default settings on this CPU" section, and README.md's
# speed table, in one go. Run it on a quiet machine (nothing else computing): PyTorch's
# OpenMP threads collapse under competition, and vs_pytorch.py refuses to write the
# README when the load average is above 1.
#
#   benchmarks/speed_report.sh TORCH_PYTHON [WINDOWS=5] [SECONDS=3] [FIRST_RUN_ROUNDS=2]
#
# TORCH_PYTHON: a Python with the CPU build of PyTorch and numpy (BENCHMARKS.md, "Running
# the benchmarks"). About 15 minutes on 2 cores with the defaults (`... 2 1 1`: about 6).
# Outputs: benchmarks/results/speed-DATE/*.txt (and vs_pytorch.json); README.md's table.
# For a trial run: SPEED_REPORT_README=/tmp/README.md (another file with the markers) and
# SPEED_REPORT_ALLOW_BUSY=1 (write even on a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${1:?usage: benchmarks/speed_report.sh TORCH_PYTHON [WINDOWS] [SECONDS] [FIRST_RUN_ROUNDS]}
WINDOWS=${2:-5}
SECONDS_PER_WINDOW=${3:-3}
ROUNDS=${4:-2}
OUT=benchmarks/results/speed-$(date -u +%Y-%m-%d-%H%M)
mkdir -p "$OUT"
TRACES=$(mktemp -d)
trap 'rm -rf "$TRACES"' EXIT
echo "== results in $OUT" >&2
date -u +"started %Y-%m-%d %H:%M:%S UTC" | tee "$OUT/when.txt"

# 1. cnncli's default (auto) and xla against PyTorch eager: the README's table (first, while the machine is quiet)
uv run python benchmarks/vs_pytorch.py --torch-python "$TORCH" --models lenet5,resnet20 --precision fp32 \
  --windows "$WINDOWS" --seconds "$SECONDS_PER_WINDOW" --json "$OUT/vs_pytorch.json" \
  --write-readme "${SPEED_REPORT_README:-README.md}" ${SPEED_REPORT_ALLOW_BUSY:+--allow-busy} \
  | tee "$OUT/vs_pytorch.txt"
# 2. the machine's float32 matmul peak, on its own
uv run python benchmarks/matmul_peak.py | tee "$OUT/matmul_peak.txt"
# 3. LeNet-5: host cost per step against the device work
uv run python benchmarks/host_overhead.py --model lenet5 | tee "$OUT/host_overhead-lenet5.txt"
# 4. where the default step's time goes, per op (oneDNN kernels named)
uv run python benchmarks/profile_step.py lenet5 --shape 28x28x1 --conv-backend onednn --steps 20 --top 15 \
  --out "$TRACES/lenet5" | tee "$OUT/profile-lenet5-onednn.txt"
uv run python benchmarks/profile_step.py resnet20 --shape 32x32x3 --conv-backend onednn --steps 5 --top 15 \
  --out "$TRACES/resnet20" | tee "$OUT/profile-resnet20-onednn.txt"
# 5. OpenMP's spin-wait between oneDNN calls while XLA runs its own ops (2 cores, two thread pools)
uv run python benchmarks/env_variants.py --model lenet5 --backend onednn --windows 4 --seconds 2 \
  --variants "default;OMP_WAIT_POLICY=passive" | tee "$OUT/env_variants-lenet5.txt"
# 6. first run of a recipe on a fresh machine: command to first trained step, with and without the build
uv run python benchmarks/first_run.py --runs "$ROUNDS" | tee "$OUT/first_run.txt"
date -u +"finished %Y-%m-%d %H:%M:%S UTC" | tee -a "$OUT/when.txt"
