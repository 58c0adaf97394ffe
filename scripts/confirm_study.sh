#!/usr/bin/env bash
# The confirmation study (docs/results/confirm.md): the default rule, frozen on 2026-12-07 (docs/method.md),
# run on Fashion-MNIST tasks it was not chosen on, at three training sizes, against baselines tuned the
# same way, with a budgeted search beside it:
#   c: pretrain on classes 0,2,4,6,8, transfer to 1,3,5,7,9;   d: pretrain on 1,3,5,7,9, transfer to 0,2,4,6,8.
# RULE=revised runs the revised default rule (frozen on 2026-12-07 at 22:27 UTC, docs/method.md: more epochs and
# cross-validated selection below 1000 images) on tasks of its own, into docs/results/confirm2/ (confirm2.md):
#   e: pretrain on classes 0,1,4,5,8, transfer to 2,3,6,7,9;   f: pretrain on 2,3,6,7,9, transfer to 0,1,4,5,8.
# With RULE=first (the default) every search gets --reference-images 0 --select-folds 1: the first rule at every size.
# Each task has its own backbone. On each task, size N (training images) and seed (the seed draws the N
# images, initialises and shuffles), every method gets one protocol (retrain --lr-grid --wd-grid, widened past
# an edge): trained on search-train (80 %) at each (lr, weight decay), scored on search-val, then trained on
# all N at the best and tested once on every test image of the target classes.
#   - probe: the linear probe;   op-concat (VPT-deep, its prompt count from PROMPTS_GRID too), op-add,
#     op-affine, op-cross_attention: one operator at every layer;
#   - default: the tool's default search (`vpdarts search` with no selection flag), its genotype retrained;
#   - cv: the default search's three genotypes chosen again by 5-fold cross-validation over all N images
#     (`vpdarts select --folds 5`) instead of the 20 % search-val, retrained (a candidate rule, measured here);
#   - budget: a search with --param-budget at BUDGET_SHARE (0.25) of add's trainable values, retrained;
#   - the front (FRONT_SIZE images, seed FRONT_SEED): `vpdarts search --pareto FRONT_K --runs 1`, and each budget's
#     genotype retrained (front-I), so that the report draws the budgeted searches as a curve of test accuracy.
# Below REF_IMAGES (1000) training images every retraining (EPOCHS, GRID_EPOCHS, PROBE_EPOCHS) runs REF_IMAGES / N
# times the epochs (rounded up), so that it makes at least the updates it makes at REF_IMAGES: at 200 images, 10
# epochs are 70 updates of batch 32, too few for most operators to train (docs/results/confirm/NOTES.md). The
# searches run as the frozen rule says, whatever the size.
#
#   scripts/confirm_study.sh [OUT_DIR]
# env: TASKS="c d", SIZES="200 1000 5000", SEEDS="0 1 2", JOBS=2 (pieces side by side, one thread each), THREADS,
#      EPOCHS=10, GRID=0.005,0.01,0.05,0.25,1.0, WD_GRID=0,1e-4,1e-3, PROMPTS_GRID=1,8,50, GRID_EPOCHS=3,
#      PROBE_EPOCHS=50, BUDGET_SHARE=0.25, PRECISION=auto, COMMIT=1 (commit every finished piece's files),
#      REPORT_ONLY=1, REPORT_SIZES (the sizes the page shows: every size of the study, whichever SIZES this run
#      runs), METHODS (run only these methods, e.g. "op-add default"; the rest are left for a later run),
#      VPDARTS_TOOL=an already built vpdarts; PRETRAIN_* as scripts/fashion_common.sh.
# The small result files of every finished piece are kept under docs/results/confirm/TASK/nN/seedS/METHOD/ (and
# committed with COMMIT=1); a piece whose metrics.json is there is skipped, so running the script again
# continues the study where it stopped. Each piece's seconds are in its metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-confirm-study}
rule=${RULE:-first}
case $rule in
  first) rule_flags=(--reference-images 0 --select-folds 1) default_res=docs/results/confirm default_tasks="c d" ;;
  revised) rule_flags=() default_res=docs/results/confirm2 default_tasks="e f" ;;
  *) echo "RULE is 'first' or 'revised', got '$rule'" >&2; exit 2 ;;
esac
tasks=${TASKS:-$default_tasks}
all_sizes="200 1000 5000"  # the study's sizes: the page shows them all
sizes=${SIZES:-$all_sizes}
seeds=${SEEDS:-0 1 2}
jobs=${JOBS:-2}
res=${RESULTS:-$default_res}
export STUDY_NAME="confirm study"
export PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3} PRETRAIN_IMAGES=${PRETRAIN_IMAGES:--1} PRETRAIN_BATCH=${PRETRAIN_BATCH:-128}
export PRETRAIN_CROP=${PRETRAIN_CROP:-2}
epochs=${EPOCHS:-10} grid=${GRID:-0.005,0.01,0.05,0.25,1.0} wd_grid=${WD_GRID:-0,1e-4,1e-3}
prompts_grid=${PROMPTS_GRID:-1,8,50} grid_epochs=${GRID_EPOCHS:-3} probe_epochs=${PROBE_EPOCHS:-50}
share=${BUDGET_SHARE:-0.25} ref_images=${REF_IMAGES:-1000}
front_size=${FRONT_SIZE:-1000} front_seed=${FRONT_SEED:-0} front_k=${FRONT_K:-4}
py=python3
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3

report() { "$py" scripts/confirm_report.py "$res" "$tasks" "${REPORT_SIZES:-$all_sizes}" "$seeds"; }
if [[ ${REPORT_ONLY:-0} == 1 ]]; then report; exit 0; fi

source scripts/fashion_common.sh
threads=1
((jobs > 1)) || threads=0
threads=${THREADS:-$threads}  # THREADS=1 with JOBS=1 leaves the other cores to other work

source_of() { case $1 in c) echo 0,2,4,6,8 ;; d) echo 1,3,5,7,9 ;; e) echo 0,1,4,5,8 ;; f) echo 2,3,6,7,9 ;;
                       *) echo "unknown task '$1' (c, d, e or f)" >&2; exit 2 ;; esac; }
target_of() { case $1 in c) echo 1,3,5,7,9 ;; d) echo 0,2,4,6,8 ;; e) echo 2,3,6,7,9 ;; f) echo 0,1,4,5,8 ;; esac; }

# the budget: a share of add's trainable values (its metrics.json), or of D x T x depth + head when add is not done yet
budget_of() {
  local m=$res/$1/n$2/seed$3/op-add/metrics.json
  "$py" -c "import json,sys; print(int(float(sys.argv[2]) * json.load(open(sys.argv[1]))['trainable_params']))" "$m" "$share"
}

# piece TASK SIZE SEED METHOD: one search or retraining (skipped when done before)
piece() {
  local task=$1 n=$2 seed=$3 method=$4 rel=$1/n$2/seed$3/$4
  [[ -f $res/$rel/metrics.json ]] && return 0
  [[ -n ${METHODS:-} && " $METHODS " != *" $method "* ]] && return 0
  local dir=$out/$rel
  mkdir -p "$dir"
  local data=(--data fashion --classes "$(target_of "$task")" --train-images "$n" --backbone "$out/$task/backbone.safetensors"
              --quiet --data-seed "$seed" --seed "$seed" --precision "${PRECISION:-auto}" --threads "$threads")
  # below ref_images, the retrainings' epochs times ref_images / n (rounded up): at least the updates of ref_images
  local scale=$(( n < ref_images ? (ref_images + n - 1) / n : 1 ))
  local epochs=$((epochs * scale)) grid_epochs=$((grid_epochs * scale)) probe_epochs=$((probe_epochs * scale))
  local retrain=(retrain "${data[@]}" --epochs "$epochs" --lr-grid "$grid" --wd-grid "$wd_grid" --grid-epochs "$grid_epochs"
                 --out "$dir")
  local cmd
  case $method in
    probe) cmd=(retrain "${data[@]}" --linear-probe --epochs "$probe_epochs" --lr-grid "$grid" --wd-grid "$wd_grid"
                --grid-epochs "$probe_epochs" --out "$dir") ;;
    op-concat) cmd=("${retrain[@]}" --op concat --prompts-grid "$prompts_grid") ;;
    op-*) cmd=("${retrain[@]}" --op "${method#op-}") ;;
    default-search) cmd=(search "${data[@]}" "${rule_flags[@]}" --out "$dir" --resume) ;;  # the frozen default rule
    budget-search) cmd=(search "${data[@]}" "${rule_flags[@]}" --out "$dir" --resume --param-budget "$(budget_of "$task" "$n" "$seed")") ;;
    front-search) cmd=(search "${data[@]}" "${rule_flags[@]}" --out "$dir" --runs 1 --pareto "$front_k") ;;
    front-*)  # budget I of the front: its genotype, from the front's metrics.json
      "$py" -c "import json, sys; m = json.load(open(sys.argv[1])); g = m['front'][int(sys.argv[2])]['genotype']
json.dump({'layers': [{'op': o} for o in g]}, open(sys.argv[3], 'w'))" \
        "$res/$task/n$n/seed$seed/front-search/metrics.json" "${method#front-}" "$dir/given-genotype.json"
      cmd=("${retrain[@]}" --genotype "$dir/given-genotype.json") ;;
    default) cmd=("${retrain[@]}" --genotype "$res/$task/n$n/seed$seed/default-search/genotype.json") ;;
    cv-select)
      local runs=$out/$task/n$n/seed$seed/default-search
      cmd=(select "${data[@]}" --runs "$runs/run-0,$runs/run-1,$runs/run-2" --folds 5 --epochs 5 --lr 0.05 --out "$dir") ;;
    cv) cmd=("${retrain[@]}" --genotype "$res/$task/n$n/seed$seed/cv-select/genotype.json") ;;
    budget) cmd=("${retrain[@]}" --genotype "$res/$task/n$n/seed$seed/budget-search/genotype.json") ;;
  esac
  run_tool "$rel" "$rel" "$dir.log" "${cmd[@]}"
}

study_start=$SECONDS
for task in $tasks; do
  mkdir -p "$out/$task"
  pretrain_backbone "$out/$task/backbone.safetensors" "$(source_of "$task")"
  sum=$(sha256sum "$out/$task/backbone.safetensors" | cut -d' ' -f1)
  mkdir -p "$res/$task"
  if [[ -f $res/$task/backbone.json ]]; then
    grep -q "\"$sum\"" "$res/$task/backbone.json" ||
      { log "task $task: the backbone differs from the one the kept results were made with ($res/$task/backbone.json)"; exit 1; }
  else
    acc=$(grep -o 'test accuracy [0-9.]*' "$out/$task/pretrain.log" 2>/dev/null | tail -n 1 | grep -o '[0-9.]*$' || true)
    # the bits of a pretrained backbone depend on the CPU kind, the thread count and the code: say which made it
    cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
    printf '{"task": "%s", "source_classes": "%s", "target_classes": "%s", "sha256": "%s", "source_test_accuracy": "%s", "cpu": "%s", "threads": %s, "commit": "%s", "date": "%s"}\n' \
      "$task" "$(source_of "$task")" "$(target_of "$task")" "$sum" "${acc:-unknown}" "${cpu:-unknown}" "${PRETRAIN_THREADS:-2}" \
      "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -u +%FT%TZ)" > "$res/$task/backbone.json"
    [[ ${COMMIT:-0} == 1 ]] && git add "$res/$task/backbone.json" && git commit -q -m "confirm study: task $task backbone" -- "$res/$task/backbone.json"
  fi
  for n in $sizes; do
    first=() second=()
    for seed in $seeds; do
      first+=("$task $n $seed default-search" "$task $n $seed op-add")
      for m in probe op-concat op-affine op-cross_attention; do first+=("$task $n $seed $m"); done
      second+=("$task $n $seed default" "$task $n $seed budget-search")
      # the first rule's candidate, cross-validated selection (the revised rule does it itself below 1000 images)
      [[ $rule == first ]] && second+=("$task $n $seed cv-select")
    done
    run_pieces "${first[@]}"
    run_pieces "${second[@]}"
    third=()
    for seed in $seeds; do
      third+=("$task $n $seed budget")
      [[ $rule == first ]] && third+=("$task $n $seed cv")
    done
    run_pieces "${third[@]}"
    log "task $task, $n images: done"
    report
  done
  if [[ " $sizes " == *" $front_size "* ]]; then
    run_pieces "$task $front_size $front_seed front-search"
    fronts=()
    for ((i = 0; i < front_k; i++)); do fronts+=("$task $front_size $front_seed front-$i"); done
    run_pieces "${fronts[@]}"
    report
  fi
done
log "study: $(((SECONDS - study_start) / 60)) minutes"
report
