#!/usr/bin/env bash
# The Fashion-MNIST transfer study (docs/results/fashion.md), on two tasks:
#   a: pretrain on classes 0-4, transfer to 5-9;   b: pretrain on 5-9, transfer to 0-4.
# On each task and seed (the seed draws the 1000 training images, initialises and shuffles):
#   - the linear probe, and concat (VPT-deep), add, affine, cross_attention at every layer;
#   - the DARTS search, its genotype by argmax of alpha and by perturbation-based selection;
#   - the best of the task's searches (DARTS's protocol: `vpdarts select` over every seed's
#     argmax genotype, scored on seed 0's search-val), retrained under every seed;
#   - with TOOL_DEFAULT=1, the tool's own default as a user runs it: `vpdarts search` (three runs on
#     the seed's images, perturbation-based selection in each, the best on search-val), its genotype
#     retrained on that seed. It costs three searches and three selections per seed (about 50
#     minutes per seed on one thread), so it is not part of the two-hour study by default.
# Every method gets its lr the same way (retrain --lr-grid): trained on the 800 search-train
# images at each lr of GRID, scored on the 200 search-val images, then trained on all 1000 at
# the best lr and tested once on every test image of the target classes.
#
#   scripts/fashion_study.sh [OUT_DIR]
# env: TASKS="a b", SEEDS="0 1 2", JOBS=2 (pieces side by side, one thread each), EPOCHS=10,
#      GRID=0.05,0.25,1.0, GRID_EPOCHS=3, PROBE_EPOCHS=50, SEARCH_EPOCHS=10, SEARCH_WARMUP=3,
#      SEARCH_LR=0.05, SELECT_EPOCHS=5, PRECISION=auto, PRETRAIN_EPOCHS=3, PRETRAIN_IMAGES=-1 (all),
#      PRETRAIN_BATCH=128, PRETRAIN_CROP=2, REPORT_ONLY=1 (re-make the report from the kept results),
#      VPDARTS_TOOL=an already built vpdarts, TOOL_DEFAULT=1 (the tool's default search too, see above).
# Each task's backbone is fingerprinted in docs/results/fashion/TASK/backbone.json (sha256, source accuracy):
# kept results are only continued on the backbone they were made with (a fresh pretraining that differs
# stops the study, since the table would mix backbones; FORCE_BACKBONE=1 goes on regardless).
# The small result files of every finished piece (metrics.json, genotype.json, alpha.csv) are kept
# under docs/results/fashion/TASK/seedS/METHOD/; a piece whose metrics.json is there is skipped, so
# running the script again continues an interrupted study. Models and checkpoints stay in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-fashion-study}
tasks=${TASKS:-a b}
seeds=${SEEDS:-0 1 2}
jobs=${JOBS:-2}
res=${RESULTS:-docs/results/fashion}  # RESULTS: elsewhere (a trial run, a re-run); the page is written beside it as RESULTS.md
export PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3} PRETRAIN_IMAGES=${PRETRAIN_IMAGES:--1} PRETRAIN_BATCH=${PRETRAIN_BATCH:-128}
export PRETRAIN_CROP=${PRETRAIN_CROP:-2}
epochs=${EPOCHS:-10} grid=${GRID:-0.05,0.25,1.0} grid_epochs=${GRID_EPOCHS:-3} probe_epochs=${PROBE_EPOCHS:-50}
search_flags=(--epochs "${SEARCH_EPOCHS:-10}" --warmup-epochs "${SEARCH_WARMUP:-3}" --w-lr "${SEARCH_LR:-0.05}")
py=python3
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3  # Debian's, with python3-matplotlib

report() { "$py" scripts/fashion_report.py "$res" "$tasks" "$seeds"; }
if [[ ${REPORT_ONLY:-0} == 1 ]]; then report; exit 0; fi

source scripts/fashion_common.sh
threads=1
((jobs > 1)) || threads=0

source_of() { [[ $1 == a ]] && echo 0-4 || echo 5-9; }
target_of() { [[ $1 == a ]] && echo 5-9 || echo 0-4; }

done_before() { [[ -f $res/$1/seed$2/$3/metrics.json ]]; }

# piece TASK SEED METHOD: one search, selection or retraining (skipped when done before)
piece() {
  local task=$1 seed=$2 method=$3
  done_before "$task" "$seed" "$method" && return 0
  local dir=$out/$task/seed$seed/$method
  local data=(--data fashion --classes "$(target_of "$task")" --train-images 1000 --backbone "$out/$task/backbone.safetensors"
              --prompts 8 --quiet --data-seed "$seed" --seed "$seed" --precision "${PRECISION:-auto}" --threads "$threads")
  local retrain=(retrain "${data[@]}" --epochs "$epochs" --lr-grid "$grid" --grid-epochs "$grid_epochs" --out "$dir")
  local cmd
  case $method in
    search) cmd=(search "${data[@]}" "${search_flags[@]}" --out "$dir" --resume --runs 1 --select argmax) ;;  # one search, DARTS's rule
    pert)  # the same search (its finished checkpoint), then perturbation-based selection
      mkdir -p "$dir"
      [[ -f $dir/search.safetensors ]] || cp "$out/$task/seed$seed/search/search.safetensors" "$dir/"
      cmd=(search "${data[@]}" "${search_flags[@]}" --out "$dir" --resume --runs 1 --select perturbation --finetune-epochs 1) ;;
    probe) cmd=(retrain "${data[@]}" --linear-probe --epochs "$probe_epochs" --lr-grid "$grid" --grid-epochs "$probe_epochs" --out "$dir") ;;
    op-*) cmd=("${retrain[@]}" --op "${method#op-}") ;;
    argmax) cmd=("${retrain[@]}" --genotype "$res/$task/seed$seed/search/genotype.json") ;;
    perturbation) cmd=("${retrain[@]}" --genotype "$res/$task/seed$seed/pert/genotype.json") ;;
    default-search) cmd=(search "${data[@]}" "${search_flags[@]}" --out "$dir" --resume) ;;  # the tool's default rule
    default) cmd=("${retrain[@]}" --genotype "$res/$task/seed$seed/default-search/genotype.json") ;;
    best) cmd=("${retrain[@]}" --genotype "$res/$task/best/genotype.json") ;;
  esac
  run_tool "$task seed $seed: $method" "$task/seed$seed/$method" "$out/$task/seed$seed-$method.log" "${cmd[@]}"
}

# fingerprint_backbone TASK: records the backbone's sha256 and source accuracy beside the task's results, or
# checks it against the record (a different backbone would mix with the kept results in one table)
fingerprint_backbone() {
  local task=$1 b=$out/$1/backbone.safetensors rec=$res/$1/backbone.json sum
  sum=$(sha256sum "$b" | cut -d' ' -f1)
  if [[ -f $rec ]]; then
    if ! grep -q "\"$sum\"" "$rec"; then
      log "task $task: $b (sha256 $sum) is not the backbone the kept results of $rec were made with"
      [[ ${FORCE_BACKBONE:-0} == 1 ]] || { log "stopping (FORCE_BACKBONE=1 goes on and mixes backbones)"; exit 1; }
    fi
    return 0
  fi
  if [[ -n $(find "$res/$task" -name metrics.json -print -quit 2>/dev/null) && ${FORCE_BACKBONE:-0} != 1 ]]; then
    log "task $task: $res/$task holds results of a backbone that was not fingerprinted; move them away to re-run the"
    log "task on this backbone (FORCE_BACKBONE=1 goes on and mixes backbones)"
    exit 1
  fi
  mkdir -p "$res/$task"
  local acc
  acc=$(grep -o 'test accuracy [0-9.]*' "$out/$task/pretrain.log" 2>/dev/null | tail -n 1 | grep -o '[0-9.]*$' || true)
  printf '{"task": "%s", "source_classes": "%s", "sha256": "%s", "source_test_accuracy": "%s"}\n' \
    "$task" "$(source_of "$task")" "$sum" "${acc:-unknown}" > "$rec.tmp" && mv "$rec.tmp" "$rec"
}

study_start=$SECONDS
for task in $tasks; do
  mkdir -p "$out/$task"
  task_start=$SECONDS
  pretrain_backbone "$out/$task/backbone.safetensors" "$(source_of "$task")"
  fingerprint_backbone "$task"
  log "task $task: backbone ready ($((SECONDS - task_start)) s)"
  first=() second=() third=()
  for seed in $seeds; do first+=("$task $seed search"); done
  if [[ ${TOOL_DEFAULT:-0} == 1 ]]; then
    for seed in $seeds; do first+=("$task $seed default-search"); second+=("$task $seed default"); done
  fi
  for seed in $seeds; do
    second+=("$task $seed pert" "$task $seed argmax")
    for m in probe op-concat op-add op-affine op-cross_attention; do first+=("$task $seed $m"); done
  done
  run_pieces "${first[@]}"
  run_pieces "${second[@]}"
  for seed in $seeds; do third+=("$task $seed perturbation"); done
  # DARTS's protocol: the best of every seed's search, scored once (seed 0's search-val), retrained under every seed
  if [[ ! -f $res/$task/best/metrics.json ]]; then
    runs=$(for s in $seeds; do printf '%s,' "$res/$task/seed$s/search"; done)
    first_seed=${seeds%% *}
    log "task $task: best of the searches"
    "$tool" select --runs "${runs%,}" --data fashion --classes "$(target_of "$task")" --train-images 1000 \
      --backbone "$out/$task/backbone.safetensors" --prompts 8 --quiet --data-seed "$first_seed" --seed "$first_seed" \
      --epochs "${SELECT_EPOCHS:-5}" --lr "${SEARCH_LR:-0.05}" --precision "${PRECISION:-auto}" --out "$out/$task/best" \
      > "$out/$task/best.log" 2>&1 || { log "task $task: select FAILED: $(tail -n 3 "$out/$task/best.log")"; exit 1; }
    mkdir -p "$res/$task/best"
    cp "$out/$task/best/genotype.json" "$res/$task/best/"
    cp "$out/$task/best/metrics.json" "$res/$task/best/"
  fi
  for seed in $seeds; do third+=("$task $seed best"); done
  run_pieces "${third[@]}"
  log "task $task: done in $(((SECONDS - task_start) / 60)) minutes"
done
log "study: $(((SECONDS - study_start) / 60)) minutes"
report
