#!/usr/bin/env bash
# The vpdarts tool under mpirun (a build with VPDARTS_MPI): search, retrain and
# eval on 2 processes give what one process gives (genotype, alpha trajectory,
# losses and accuracy within float rounding); process 0 alone prints and
# writes; a search checkpointed on 2 processes resumes on 1; a batch smaller
# than the processes is a usage error; a bad file stops the whole job; processes given
# other flags stop together, naming them.
#   test_mpi_cli.sh PATH/TO/vpdarts MPIEXEC WORK_DIR
set -uo pipefail
tool=$(realpath "$1") mpiexec=$2 work=$3
rm -rf "$work" && mkdir -p "$work/home" "$work/cache" && cd "$work" || exit 1
export VPDARTS_CACHE=$work/cache HOME=$work/home XDG_CACHE_HOME=$work/home/.cache OMP_NUM_THREADS=1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
mpi() { timeout 300 "$mpiexec" --oversubscribe --allow-run-as-root --bind-to none -np "$@"; }
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
# close FILE_A FILE_B: two alpha CSVs (or metrics' loss lists) agree to 1e-4 relative
close_csv() {
  python3 - "$1" "$2" <<'PY'
import csv, sys
rows = [list(csv.reader(open(p))) for p in sys.argv[1:3]]
assert len(rows[0]) == len(rows[1]) > 1, "row counts differ"
assert rows[0][0] == rows[1][0], "headers differ"
for a, b in zip(rows[0][1:], rows[1][1:]):
    for x, y in zip(a, b):
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            assert x == y, (x, y)
            continue
        assert abs(fx - fy) <= 1e-4 * max(abs(fy), 1e-3), (x, y)
PY
}

"$tool" pretrain --out bb.safetensors --image 16 --patch 4 --dim 16 --depth 2 --heads 2 --mlp 32 --epochs 1 \
  --train-images 64 --test-images 16 --quiet > pretrain.log 2>&1 || fail "pretrain: $(tail -n 3 pretrain.log)"
common=(--backbone bb.safetensors --prompts 2 --batch 7 --train-images 70 --epochs 3 --warmup-epochs 1 --alpha-lr 0.1 --runs 1 --reference-images 0 --quiet)

# ---- search: 1 process, then 2 (batch 7: an uneven split)
"$tool" search "${common[@]}" --out one > one.log 2>&1 || fail "search on 1 process: $(tail -n 3 one.log)"
mpi 2 "$tool" search "${common[@]}" --out two > two.log 2>&1 || fail "search on 2 processes: $(tail -n 5 two.log)"
grep -q "every batch shared over 2 processes" two.log || fail "the 2-process search did not say it shares batches: $(head -n 5 two.log)"
[[ $(grep -c "^search: .*operators" two.log) == 1 ]] || fail "more than process 0 printed: $(cat two.log)"
[[ "$(json one/metrics.json "['genotype']")" == "$(json two/metrics.json "['genotype']")" ]] ||
  fail "genotypes differ: $(json one/metrics.json "['genotype']") vs $(json two/metrics.json "['genotype']")"
close_csv one/alpha.csv two/alpha.csv || fail "alpha trajectories differ beyond 1e-4"
[[ "$(json two/metrics.json "['processes']")" == 2 ]] || fail "metrics.json does not record 2 processes"
ls two/*.tmp-* >/dev/null 2>&1 && fail "a temporary was left in two/"

# ---- retrain and eval: 1 process, then 2
for n in 1 2; do
  mpi $n "$tool" retrain --run one --backbone bb.safetensors --prompts 2 --batch 7 --train-images 70 --test-images 30 \
    --epochs 2 --crop-padding 2 --flip --quiet --out r$n > r$n.log 2>&1 || fail "retrain on $n: $(tail -n 5 r$n.log)"
  mpi $n "$tool" eval --model r1/model.safetensors --test-images 30 --out e$n > e$n.log 2>&1 || fail "eval on $n: $(tail -n 5 e$n.log)"
done
python3 - r1/metrics.json r2/metrics.json <<'PY' || fail "retrain: 2 processes do not match 1: $(cat r1/metrics.json r2/metrics.json)"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * abs(a["train_loss"]), (a["train_loss"], b["train_loss"])
assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1 / 30 + 1e-9, (a["test_accuracy"], b["test_accuracy"])
PY
[[ "$(json e1/metrics.json "['test_accuracy']")" == "$(json e2/metrics.json "['test_accuracy']")" ]] ||
  fail "eval: accuracy differs between 1 and 2 processes"

# ---- a checkpoint of 2 processes resumes on 1: the 2-process search killed once its first checkpoint is written
"$tool" search "${common[@]}" --epochs 4 --out straight > straight.log 2>&1 || fail "straight search: $(tail -n 3 straight.log)"
mpi 2 "$tool" search "${common[@]}" --epochs 4 --out half > half.log 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -f half/search.safetensors ]] && break; sleep 0.1; done
kill -9 $pid 2>/dev/null; pkill -9 -f "vpdarts.* search .*--out half" 2>/dev/null; wait $pid 2>/dev/null
if [[ -f half/search.safetensors ]]; then
  "$tool" search "${common[@]}" --epochs 4 --out half --resume > resume.log 2>&1 || fail "resume on 1 process: $(tail -n 3 resume.log)"
  grep -q "resumed after epoch" resume.log || echo "note: the 2-process search finished before the kill"
  close_csv half/alpha.csv straight/alpha.csv || fail "resumed on 1 process: alpha differs from the uninterrupted run"
else
  fail "the 2-process search wrote no checkpoint within 60 s"
fi

# ---- usage errors and failures
out=$(mpi 2 "$tool" search "${common[@]}" --batch 1 --out b1 2>&1)
code=$?
[[ $code == 2 ]] || fail "--batch 1 on 2 processes exited $code, expected 2: $out"
grep -q "smaller than the 2 processes" <<< "$out" || fail "--batch 1 on 2 processes: no message: $out"
[[ $(grep -c "smaller than the 2 processes" <<< "$out") == 1 ]] || fail "the usage error was printed by more than process 0: $out"
echo "not a safetensors file" > broken.safetensors
out=$(mpi 2 "$tool" search --backbone broken.safetensors --out broken 2>&1)
code=$?
[[ $code != 0 && $code != 124 ]] || fail "a broken backbone on 2 processes exited $code: $out"
grep -q "broken.safetensors" <<< "$out" || fail "a broken backbone on 2 processes: the message does not name the file: $out"

# ---- processes given other settings stop together before the first step, naming what differs
# (mpirun's A : B form starts one process of each command line)
mpmd() { timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root --bind-to none "$@"; }
for other in "--data-seed 2|data-seed \"2\" (process 0: not set)" "--batch 14|batch \"14\" (process 0: \"7\")" \
             "--fp32-gemm eigen|fp32-gemm \"eigen\" (process 0: not set)"; do
  flag=${other%%|*} said=${other#*|}
  start=$SECONDS
  # shellcheck disable=SC2086
  out=$(mpmd -np 1 "$tool" search "${common[@]}" --out mixed : -np 1 "$tool" search "${common[@]}" --out mixed $flag 2>&1)
  code=$?
  [[ $code != 0 && $code != 124 ]] || fail "processes with '$flag' on one of them exited $code: $out"
  grep -qF "the processes were not given the same data and settings: process 1 of 2 differs from process 0: $said" <<< "$out" ||
    fail "processes with '$flag' on one of them: the message does not name it: $out"
  (( SECONDS - start < 60 )) || fail "processes with '$flag' on one of them took $((SECONDS - start)) s to stop"
  [[ -e mixed/metrics.json ]] && fail "processes with '$flag' on one of them wrote a result"
done

echo "test_mpi_cli: $failures failures"
(( failures == 0 ))
