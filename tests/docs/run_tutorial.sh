#!/usr/bin/env bash
# Runs every `build/bin/vpdarts ...` command of docs/tutorial.md, in the order
# written, against the built tool, in a fresh working folder. So that it takes
# a minute rather than ten, two things differ from a user's run, and only these:
#   - the built-in backbone's cache is seeded with a backbone of the built-in
#     shape pretrained for one short epoch (the tutorial pretrains it for 80 s);
#   - each command gets a few flags that shrink epochs and image counts.
# Every command must exit 0, and the files the tutorial names must exist.
#   run_tutorial.sh PATH/TO/vpdarts PATH/TO/docs/tutorial.md WORK_DIR
set -uo pipefail
tool=$(realpath "$1")
tutorial=$(realpath "$2")
work=$3
rm -rf "$work" && mkdir -p "$work/cache" "$work/home" && cd "$work" || exit 1
# never the user's home or cache: the tutorial's `~/.cache/vpdarts` is a folder of our own
export VPDARTS_CACHE=$work/cache HOME=$work/home XDG_CACHE_HOME=$work/home/.cache OMP_NUM_THREADS=2
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The built-in backbone's shape (tools/vpdarts/main.cpp, builtin_recipe).
"$tool" pretrain --out cache/builtin-v1-i32p4d64l4h2m256.safetensors --image 32 --patch 4 --dim 64 --depth 4 \
  --heads 2 --mlp 256 --classes 0-4 --epochs 1 --train-images 200 --test-images 50 --batch 25 --quiet > pretrain.log 2>&1 ||
  fail "seeding the backbone cache: $(tail -n 3 pretrain.log)"

declare -A quick=(
  [search]="--epochs 2 --warmup-epochs 1 --train-images 100 --batch 16 --reference-images 0"
  [retrain]="--epochs 1 --train-images 100 --test-images 50 --batch 16"
  [eval]="--test-images 50"
  [sample]=""
  [predict]=""
)

# Indented code lines that run the tool; a trailing "# comment" is dropped.
mapfile -t commands < <(sed -n 's/^    build\/bin\/vpdarts \(.*\)$/\1/p' "$tutorial" | sed 's/[[:space:]]*#.*$//')
(( ${#commands[@]} >= 10 )) || fail "found only ${#commands[@]} tool commands in $tutorial"
n=0
predict_log=
for line in "${commands[@]}"; do
  n=$((n + 1))
  read -r -a words <<< "$line"
  sub=${words[0]}
  [[ -v quick[$sub] ]] || { fail "command $n: unknown subcommand '$sub' in '$line'"; continue; }
  extra=${quick[$sub]}
  # folder and list data use every image: the image counts apply to synthetic and IDX data only
  [[ " ${words[*]} " == *" --data folder "* || " ${words[*]} " == *" --data list "* ]] &&
    extra=$(sed -E 's/--(train|test)-images [0-9]+//g' <<<"$extra")
  # shellcheck disable=SC2086  # the quick flags are words; the tutorial's globs expand as in a shell
  eval "set -- ${words[*]} $extra"
  echo "+ vpdarts $* "
  [[ $sub == predict ]] && predict_log=step$n.log
  if ! "$tool" "$@" > "step$n.log" 2>&1; then
    fail "command $n 'vpdarts $line' failed: $(tail -n 3 "step$n.log")"
  fi
done

grep -q "cached at" step1.log || fail "the first search did not use the seeded backbone cache"
for f in run/genotype.json run/alpha.png run/alpha.csv run/run-0/search.safetensors run/run-2/search.safetensors run/retrain/model.safetensors \
         run/probe/metrics.json run/op-concat/metrics.json run/retrain/eval/metrics.json \
         flowers-run/genotype.json flowers-run/retrain/metrics.json; do
  [[ -s $f ]] || fail "the tutorial promises $f, which was not written"
done
grep -q $'\t' "${predict_log:-/dev/null}" || fail "predict printed no 'file<TAB>label<TAB>prob' lines"

echo "$n tutorial commands run, $failures failures"
(( failures == 0 ))
