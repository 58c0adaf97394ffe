#!/usr/bin/env bash
# The `fashion` workload (docs/method.md, section 7) end to end, with the vpdarts tool:
#   1. pretrain the fashion backbone (28x28x1, patch 4, D 192, depth 6, 3 heads,
#      MLP 768) on Fashion-MNIST classes 0-4;
#   2. for each seed: draw 1000 training images of classes 5-9 (800 search-train
#      + 200 search-val), then run the linear probe, every single operator at
#      every layer (concat = VPT-deep, add, affine, cross_attention), and the
#      DARTS search followed by retraining of its genotype; test on every test
#      image of classes 5-9;
#   3. write docs/results/fashion.md (mean and spread per method) and copy the
#      alpha heatmaps next to it.
#
#   scripts/fashion_study.sh [OUT_DIR]   (env: SEEDS="0 1 2", PRETRAIN_EPOCHS=5, PRETRAIN_IMAGES=10000,
#                                          VPDARTS_TOOL=path to an already built vpdarts, else it is built,
#                                          STAGE=train to stop before the eval pass and the report)
# A step whose metrics.json exists is skipped, so running it again continues an interrupted study.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-fashion-study}
seeds=${SEEDS:-0 1 2}
start=${STUDY_START:-$(date +%s)}  # STUDY_START: epoch seconds of a first run that this one continues

source scripts/fashion_common.sh
backbone=$out/fashion_backbone.safetensors
pretrain_backbone "$backbone"
data=(--data fashion --classes 5-9 --train-images 1000 --backbone "$backbone" --prompts 8 --quiet)
# step NAME RESULT_FILE LINES -- command...: runs a step unless its result exists (a re-run continues)
step() {
  local name=$1 result=$2 lines=$3
  shift 4
  if [[ -f $result ]]; then log "$name: done before ($result)"; return; fi
  log "$name"
  "$@" | tail -n "$lines" >> "$out/study.log"
}
for seed in $seeds; do
  run=$out/seed$seed
  args=("${data[@]}" --data-seed "$seed" --seed "$seed")
  step "seed $seed: search" "$run/metrics.json" 8 -- "$tool" search "${args[@]}" --out "$run" --resume
  step "seed $seed: retrain the genotype" "$run/retrain/metrics.json" 1 -- "$tool" retrain "${args[@]}" --run "$run"
  for op in concat add affine cross_attention; do
    step "seed $seed: $op at every layer" "$run/op-$op/metrics.json" 1 -- "$tool" retrain "${args[@]}" --run "$run" --op "$op"
  done
  step "seed $seed: linear probe" "$run/probe/metrics.json" 1 -- "$tool" retrain "${args[@]}" --run "$run" --linear-probe --epochs 50
done
# STAGE=train stops here (to run seeds side by side: STAGE=train SEEDS=1 & STAGE=train SEEDS=2, then SEEDS="0 1 2").
[[ ${STAGE:-all} == train ]] && exit 0
# Latency and throughput once more, each model alone on the machine (the figures
# retrain wrote may have shared it with other work): eval on 200 test images.
for seed in $seeds; do
  for sub in retrain probe op-concat op-add op-affine op-cross_attention; do
    "$tool" eval --data fashion --classes 5-9 --test-images 200 --quiet --model "$out/seed$seed/$sub/model.safetensors" \
      --out "$out/seed$seed/$sub/eval" | tail -n 1 >> "$out/study.log"
  done
done

mkdir -p docs/results/fashion
python3 - "$out" "$(( $(date +%s) - start ))" "$seeds" <<'PY'
import json, shutil, statistics, sys
out, seconds, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
methods = [("linear probe", "probe"), ("concat (VPT-deep)", "op-concat"), ("add", "op-add"), ("affine", "op-affine"),
           ("cross_attention", "op-cross_attention"), ("searched genotype", "retrain")]
lines = ["# Fashion-MNIST transfer study", "",
         "The `fashion` workload: a ViT (28x28x1, patch 4, D 192, depth 6, 3 heads, MLP 768, 8 prompts)",
         "pretrained on Fashion-MNIST classes 0-4, then adapted on 1000 training images of classes 5-9",
         "(800 search-train + 200 search-val for the search; all 1000 for retraining) and tested on all",
         f"test images of classes 5-9. Seeds: {', '.join(seeds)}; mean and standard deviation over seeds.", "",
         "| method | test accuracy (mean ± sd) | per seed | trainable params | % of backbone | latency ms (batch 1) | images/s (batch 64) | train s | search s |",
         "|---|---|---|---|---|---|---|---|---|"]
means = {}
span = lambda xs, fmt: fmt(xs[0]) if len(xs) == 1 else f"{fmt(xs[0])}-{fmt(xs[-1])}"  # one value, or the range over seeds
search_s = [json.load(open(f"{out}/seed{s}/metrics.json"))["search_seconds"] for s in seeds]
for name, sub in methods:
    ms = [json.load(open(f"{out}/seed{s}/{sub}/metrics.json")) for s in seeds]
    for s, m in zip(seeds, ms):  # latency and throughput from the quiet eval pass when it ran
        try:
            e = json.load(open(f"{out}/seed{s}/{sub}/eval/metrics.json"))
            m["latency_ms_batch1"], m["throughput_batch64"] = e["latency_ms_batch1"], e["throughput_batch64"]
        except OSError:
            pass
    acc = [m["test_accuracy"] for m in ms]
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    extra = f"{statistics.mean(search_s):.0f}" if sub == "retrain" else "-"
    means[name] = statistics.mean(acc)
    params = sorted({m["trainable_params"] for m in ms})
    pct = sorted({round(m["trainable_percent"], 3) for m in ms})
    lines.append(f"| {name} | {statistics.mean(acc):.4f} ± {sd:.4f} | {' / '.join(f'{a:.4f}' for a in acc)} | "
                 f"{span(params, str)} | {span(pct, lambda p: f'{p:.3f}')} | "
                 f"{statistics.mean(m['latency_ms_batch1'] for m in ms):.2f} | "
                 f"{statistics.mean(m['throughput_batch64'] for m in ms):.0f} | "
                 f"{statistics.mean(m['seconds'] for m in ms):.0f} | {extra} |")
singles = {k: v for k, v in means.items() if k not in ("linear probe", "searched genotype")}
best = max(singles, key=singles.get)
diff = means["searched genotype"] - singles[best]
lines += ["", f"Searched genotype against the best single operator ({best}): {means['searched genotype']:.4f} vs "
          f"{singles[best]:.4f}, {'+' if diff >= 0 else ''}{diff * 100:.2f} points "
          f"({'the hybrid is ahead' if diff > 0 else 'the hybrid is not ahead'} on the mean over seeds); "
          f"against the linear probe: {(means['searched genotype'] - means['linear probe']) * 100:+.2f} points."]
lines += ["", "## Genotypes found", ""]
for s in seeds:
    m = json.load(open(f"{out}/seed{s}/metrics.json"))
    lines.append(f"- seed {s}: {', '.join(m['genotype'])} (margins {', '.join(f'{x:.3f}' for x in m['margins'])})")
    shutil.copy(f"{out}/seed{s}/alpha.png", f"docs/results/fashion/alpha_seed{s}.png")
lines += ["", "## softmax(alpha) after the search", ""]
lines += [f"![seed {s}](fashion/alpha_seed{s}.png)" for s in seeds]
lines += ["", "## Reproduce", "", "    scripts/fashion_study.sh", "",
          f"The whole study took {seconds / 60:.0f} minutes on this machine ({len(seeds)} seeds)."]
open("docs/results/fashion.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
