#!/usr/bin/env bash
# The GPU study (issue 21) in one command on the device machine, and the one command here that prepares it.
#
#   bash benchmarks/device_study.sh --prepare    HERE (venv with the scenes extra, network): wheels into .whl/,
#                                                the study's data into .devdata/, then the travelling size
#   bash benchmarks/device_study.sh [--pilot]    ON THE DEVICE, in the repo root: the device tool's `run` with
#                                                command "bash benchmarks/device_study.sh", carry [".whl", ".devdata"],
#                                                timeout_s 600
#   bash benchmarks/device_study.sh --skip-study ON THE DEVICE: setup, gpu tests and the throughput table only
#   bash benchmarks/device_study.sh --dry-run    anywhere: every step on CPU for a few steps each
#                                                (tests/test_device_study.py runs it)
#
# Steps, in this order, each with its wall time and a timeout; a failing step is reported and the next runs:
#   1. setup: install the carried wheels into $SITE (/tmp/site), put them and the repo root on PYTHONPATH,
#      print GPU, driver, torch, CUDA and CPU;
#   2. study: `python -m smile_synth compare --protocol gpu` (--pilot: the pilot) with what is left of the budget;
#   3. tests: `python -m pytest -m gpu -q` over the test files that mark tests gpu;
#   4. bench: benchmarks/bench_device.py, its rows stopped at the budget (it writes its table row by row).
# The study runs first because it is the deliverable that needs the most time (up to 9 minutes of the
# 10-minute call); the tests and the table fill what is left, and `--skip-study` gives them a call of their own.
# BUDGET_S (default 585) is the whole run's wall-clock budget: each step's timeout is what is left of it.
#
# Output: at most 8 files in $OUT (default: a new temporary folder), in this order of priority:
# device_study.log, report.md, results.json, pilot.md, pilot.json, bench.md, report.png, loss.png, bench.json.
# Exit status: 0 when every step that ran succeeded, else 1.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-585}
if [[ ! $BUDGET_S =~ ^[0-9]+$ ]]; then
  echo "Error: BUDGET_S=$BUDGET_S is not a whole number of seconds; e.g. BUDGET_S=585" >&2
  exit 2
fi
MODE=device PILOT=() STUDY=1
for arg in "$@"; do
  case $arg in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --pilot) PILOT=(--pilot) ;;
    --skip-study) STUDY=0 ;;
    -h|--help) sed -n '2,25p' "$0" | cut -c3-; exit 0 ;;
    *) echo "Error: unknown option $arg; use --prepare, --dry-run, --pilot, --skip-study or --help" >&2; exit 2 ;;
  esac
done

if [[ $MODE == prepare ]]; then
  # each step stops the preparation with one line when it cannot succeed
  for step in wheels data pyav size; do
    echo "== prepare: $step"
    "$PY" benchmarks/device_prepare.py "$step" || exit 1
  done
  echo "prepared: on the device run \`bash benchmarks/device_study.sh\` with carry [\".whl\", \".devdata\"]"
  exit 0
fi

START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT   # the study's run folders and the bench's scratch: what matters is copied to $OUT
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
# the study's seeds are GpuProtocol's; the dry run's study has 1, which halves its evaluations (not the
# pilot's: its rule compares scratch with chance by the seeds' std)
if [[ $MODE == dry ]]; then
  DEVICE=cpu DRY=(--dry-run) SITE=$WORK/site SEEDS=(--seeds 1)
else
  DEVICE=cuda DRY=() SITE=/tmp/site SEEDS=()
fi
((${#PILOT[@]})) && SEEDS=()
FAILED=() SUMMARY=()

left() { echo $((DEADLINE - $(date +%s))); }

# run_step NAME SECONDS CMD...: CMD under a timeout of SECONDS (at most what is left), its wall time and status
run_step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  ((limit > $(left) - 5)) && limit=$(($(left) - 5))
  if ((limit < 10)); then
    echo "== $name: not run ($(left)s left of BUDGET_S=$BUDGET_S)"
    SUMMARY+=("$name: not run (out of time)")
    return
  fi
  echo "== $name (timeout ${limit}s): $*"
  t0=$(date +%s)
  if declare -F "$1" >/dev/null; then "$@"; else timeout -k 10 "$limit" "$@"; fi   # functions: quick, no timeout
  rc=$?
  local took=$(($(date +%s) - t0))
  if ((rc == 0)); then
    SUMMARY+=("$name: ok in ${took}s")
  else
    [[ $rc == 124 || $rc == 137 ]] && rc="$rc (timed out after ${limit}s)"
    SUMMARY+=("$name: FAILED, exit $rc, after ${took}s")
    FAILED+=("$name")
  fi
  echo "== $name: ${SUMMARY[-1]#*: }"
}

# collect DIR...: copy the output files found in DIR... into $OUT, in priority order, at most 8 files in all
collect() {
  local name dir n
  for name in report.md results.json pilot.md pilot.json bench.md report.png loss.png bench.json; do
    n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
    [[ -e $OUT/$name ]] && continue
    for dir in "$@"; do
      if [[ -f $dir/$name ]] && ((n < 8)); then cp "$dir/$name" "$OUT/" && break; fi
    done
  done
}

setup() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl || return 1
    echo "installed into $SITE: $(cd .whl && echo *.whl)"
  else
    echo "no .whl/: nothing to install (on the device, run --prepare here first: the CLIP teacher needs open_clip)"
  fi
  "$PY" - <<'EOF'
import importlib.util, platform, subprocess, torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
      f"cuDNN {torch.backends.cudnn.version()}; GPU: {torch.cuda.get_device_name() if cuda else 'none'}")
for name in ("open_clip", "av"):
    spec = importlib.util.find_spec(name)
    print(f"{name}: {spec.origin if spec else 'not installed'}")
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
print(next((l.strip() for l in cpu.splitlines() if l.startswith("Model name")), "CPU model: unknown"))
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  return 0
}

main() {
  echo "device_study ($MODE) $(date -u +%FT%TZ) in $REPO; output to $OUT; budget ${BUDGET_S}s"
  if [[ $MODE == device ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "Error: no CUDA device here; on a machine without one run: bash benchmarks/device_study.sh --dry-run"
    return 1
  fi
  run_step setup 120 setup

  if ((STUDY)); then
    DATA=()
    [[ -d .devdata ]] && DATA=(--data-dir .devdata)
    run_step study $(($(left) - 20)) "$PY" -m smile_synth compare --protocol gpu --device "$DEVICE" \
      --out "$WORK/study" "${SEEDS[@]}" "${DATA[@]}" "${PILOT[@]}" "${DRY[@]}"
    collect "$WORK/study"
  fi

  mapfile -t GPU_TESTS < <(grep -lE 'mark\.gpu' tests/test_*.py)
  run_step tests 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider "${GPU_TESTS[@]}"

  local rows_until=$(($(left) - 40))        # the table starts no row after this; its last row needs the rest
  run_step bench "$BUDGET_S" "$PY" benchmarks/bench_device.py --out "$WORK/bench" --device "$DEVICE" \
    --budget-s $((rows_until > 0 ? rows_until : 0)) "${DRY[@]}"
  collect "$WORK/bench"

  echo "== summary ($(($(date +%s) - START))s of BUDGET_S=$BUDGET_S)"
  printf '  %s\n' "${SUMMARY[@]}"
  echo "  files in $OUT: $(cd "$OUT" && echo *)"
  ((${#FAILED[@]} == 0))
}

export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
main 2>&1 | tee -a "$OUT/device_study.log"
exit "${PIPESTATUS[0]}"
