# Shared by fashion_study.sh and bf16_study.sh (sourced, after `cd` to the repository and with $out set):
# installs the Fashion-MNIST package, finds or builds the tool ($tool), defines log(), and
# pretrain_backbone PATH [CLASSES], which pretrains the fashion backbone (28x28x1, patch 4, D 192, depth 6,
# 3 heads, MLP 768) on CLASSES (default 0-4) unless PATH exists (env PRETRAIN_EPOCHS=5,
# PRETRAIN_IMAGES=10000 (-1: all), PRETRAIN_BATCH=64, PRETRAIN_CROP=0: random-crop padding).
scripts/install-deps.sh --fashion
tool=${VPDARTS_TOOL:-}
if [[ -z $tool ]]; then
  flags=(-DCMAKE_BUILD_TYPE=Release)
  command -v ccache >/dev/null && flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B build "${flags[@]}" > /dev/null
  cmake --build build -j "$(nproc)" --target vpdarts_cli
  tool=build/bin/vpdarts
fi
mkdir -p "$out"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$out/study.log"; }

pretrain_backbone() {
  local backbone=$1 classes=${2:-0-4}
  [[ -f $backbone ]] && return
  log "pretrain the fashion backbone on classes $classes"
  "$tool" pretrain --data fashion --classes "$classes" --image 28 --channels 1 --patch 4 --dim 192 --depth 6 --heads 3 \
    --mlp 768 --epochs "${PRETRAIN_EPOCHS:-5}" --train-images "${PRETRAIN_IMAGES:-10000}" --batch "${PRETRAIN_BATCH:-64}" \
    --crop-padding "${PRETRAIN_CROP:-0}" --threads "${PRETRAIN_THREADS:-2}" --out "$backbone" | tee "$(dirname "$backbone")/pretrain.log" | tail -n 1 |
    tee -a "$out/study.log"
}

# keep REL: copies the small result files of a finished piece from $out/REL into $res/REL (metrics.json last: it
# marks the piece done); with COMMIT=1, commits them at once (a long study keeps what it finished)
keep() {
  local from=$out/$1 to=$res/$1
  mkdir -p "$to"
  for f in genotype.json alpha.csv front.csv metrics.json; do
    [[ -f $from/$f ]] && cp "$from/$f" "$to/$f.tmp" && mv "$to/$f.tmp" "$to/$f"
  done
  if [[ ${COMMIT:-0} == 1 ]]; then
    (
      flock 9
      git add -- "$to" && git commit -q -m "${STUDY_NAME:-study}: $1" -- "$to" || true
    ) 9> "$out/.git-lock"
  fi
  return 0
}

# run_tool LABEL REL LOG ARGS...: runs "$tool" ARGS with its output in LOG; when it succeeds keeps REL's files
# (keep), and says under LABEL how long it took and its last line; when it fails, its last lines
run_tool() {
  local label=$1 rel=$2 logfile=$3 start=$SECONDS
  shift 3
  log "$label"
  if "$tool" "$@" > "$logfile" 2>&1; then
    keep "$rel"
    log "$label done in $((SECONDS - start)) s: $(tail -n 1 "$logfile")"
  else
    log "$label FAILED: $(tail -n 3 "$logfile")"
    return 1
  fi
}

# run_pieces "ARGS" ...: `piece ARGS` for each, at most $jobs side by side; fails when any failed
run_pieces() {
  local failed=0 running=0
  for p in "$@"; do
    if ((running >= jobs)); then
      wait -n || failed=1
      running=$((running - 1))
    fi
    piece $p &
    running=$((running + 1))
  done
  while ((running > 0)); do
    wait -n || failed=1
    running=$((running - 1))
  done
  return $failed
}
