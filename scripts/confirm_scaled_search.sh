#!/usr/bin/env bash
# A diagnostic beside the confirmation study (docs/results/confirm/NOTES.md): below REF_IMAGES (1000) training
# images the frozen default rule searches for its 10 epochs whatever the size (about 50 updates of batch 32 at
# 200 images), while the study retrains every method for REF_IMAGES / N times its epochs. This runs the default
# search with every epoch count of the rule (--epochs, --warmup-epochs, --lr-warmup-epochs, --grid-epochs,
# --select-epochs, --finetune-epochs) times the same factor, on the study's own tasks, backbones and data draws,
# and retrains its genotype exactly as the study retrains the default's, so that the two compare seed for seed.
# It is a candidate rule measured, not the frozen rule: a rule chosen from it would need tasks of its own.
#
#   scripts/confirm_scaled_search.sh STUDY_DIR   (the confirmation study's OUT_DIR: its TASK/backbone.safetensors)
# env: TASKS="c", SIZES="200", SEEDS="0 1 2", JOBS=2, and EPOCHS, GRID, WD_GRID, GRID_EPOCHS, REF_IMAGES,
#      PRECISION, COMMIT as scripts/confirm_study.sh. Results: docs/results/confirm-scaled/TASK/nN/seedS/{search,
#      default}; a piece whose metrics.json is there is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
study=${1:?usage: scripts/confirm_scaled_search.sh STUDY_DIR, the output directory of scripts/confirm_study.sh}
out=$study/scaled
tasks=${TASKS:-c} sizes=${SIZES:-200} seeds=${SEEDS:-0 1 2} jobs=${JOBS:-2}
res=${RESULTS:-docs/results/confirm-scaled}
export STUDY_NAME="confirm study, scaled search"
epochs=${EPOCHS:-10} grid=${GRID:-0.005,0.01,0.05,0.25,1.0} wd_grid=${WD_GRID:-0,1e-4,1e-3} grid_epochs=${GRID_EPOCHS:-3}
ref_images=${REF_IMAGES:-1000}
source scripts/fashion_common.sh
threads=1
((jobs > 1)) || threads=0
target_of() { [[ $1 == c ]] && echo 1,3,5,7,9 || echo 0,2,4,6,8; }

piece() {
  local task=$1 n=$2 seed=$3 method=$4 rel=$1/n$2/seed$3/$4
  [[ -f $res/$rel/metrics.json ]] && return 0
  local backbone=$study/$task/backbone.safetensors
  [[ -f $backbone ]] || { log "$rel: no backbone at $backbone (run scripts/confirm_study.sh $study first)"; return 1; }
  local dir=$out/$rel
  mkdir -p "$dir"
  local data=(--data fashion --classes "$(target_of "$task")" --train-images "$n" --backbone "$backbone"
              --quiet --data-seed "$seed" --seed "$seed" --precision "${PRECISION:-auto}" --threads "$threads")
  local f=$(( n < ref_images ? (ref_images + n - 1) / n : 1 ))
  local cmd
  case $method in
    # the default rule's epoch counts (vpdarts search --help) times f
    search) cmd=(search "${data[@]}" --out "$dir" --resume --epochs $((10 * f)) --warmup-epochs $((2 * f))
                 --lr-warmup-epochs $((1 * f)) --grid-epochs $((2 * f)) --select-epochs $((5 * f)) --finetune-epochs $((1 * f))) ;;
    default) cmd=(retrain "${data[@]}" --epochs $((epochs * f)) --lr-grid "$grid" --wd-grid "$wd_grid"
                  --grid-epochs $((grid_epochs * f)) --out "$dir" --genotype "$res/$task/n$n/seed$seed/search/genotype.json") ;;
  esac
  run_tool "$rel" "$rel" "$dir.log" "${cmd[@]}"
}

for task in $tasks; do
  for n in $sizes; do
    first=() second=()
    for seed in $seeds; do first+=("$task $n $seed search"); second+=("$task $n $seed default"); done
    run_pieces "${first[@]}"
    run_pieces "${second[@]}"
    log "task $task, $n images: done"
  done
done
