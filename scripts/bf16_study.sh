#!/usr/bin/env bash
# bf16 against float32 on the fashion study's first task (Fashion-MNIST, pretrained on classes 0-4,
# prompts fitted on 1000 images of classes 5-9), seed 0: the search in each precision, and each
# genotype retrained in each precision, tested on every test image of classes 5-9. Needs a CPU
# with AVX512-BF16 or AMX (it stops with the tool's reason elsewhere). Writes docs/results/bf16.md.
# A step whose metrics.json exists is skipped, so running it again continues.
#
#   scripts/bf16_study.sh [OUT_DIR]   (env: SEED=0, BACKBONE=an existing fashion backbone, else pretrained as
#                                       fashion_study.sh does; VPDARTS_TOOL=an already built vpdarts)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bf16-study}
seed=${SEED:-0}
source scripts/fashion_common.sh
backbone=${BACKBONE:-$out/fashion_backbone.safetensors}
pretrain_backbone "$backbone"
args=(--data fashion --classes 5-9 --train-images 1000 --backbone "$backbone" --prompts 8 --quiet --data-seed "$seed" --seed "$seed")
for search in fp32 bf16; do
  run=$out/search-$search
  if [[ ! -f $run/metrics.json ]]; then
    log "search in $search"
    "$tool" search "${args[@]}" --out "$run" --precision "$search" | tail -n 8 >> "$out/study.log"
  fi
  for retrain in fp32 bf16; do
    if [[ ! -f $run/retrain-$retrain/metrics.json ]]; then
      log "retrain the $search genotype in $retrain"
      "$tool" retrain "${args[@]}" --run "$run" --precision "$retrain" | tail -n 1 >> "$out/study.log"
      mv "$run/retrain" "$run/retrain-$retrain"
    fi
  done
done

python3 - "$out" "$seed" <<'PY'
import json, sys
out, seed = sys.argv[1], sys.argv[2]
m = lambda p: json.load(open(p))
rows = ["# bf16 against float32: the fashion task, seed " + seed, "",
        "Written by `scripts/bf16_study.sh`: the search of the fashion study's first task (Fashion-MNIST, backbone "
        "pretrained on classes 0-4, prompts on 1000 images of classes 5-9, default search settings) run in each "
        "precision, and each genotype retrained in each precision, tested on every test image of classes 5-9. "
        "bf16 is `--precision bf16` (docs/precision.md).", "",
        "| search | genotype (margins) | search s | retrain | test accuracy | retrain s | latency ms (batch 1) |",
        "|---|---|---|---|---|---|---|"]
for s in ("fp32", "bf16"):
    sm = m(f"{out}/search-{s}/metrics.json")
    ops = sm["genotype"]
    margins = sm.get("margins", [])
    geno = ", ".join(ops) + (" (" + ", ".join(f"{x:.2f}" for x in margins) + ")" if margins else "")
    for r in ("fp32", "bf16"):
        rm = m(f"{out}/search-{s}/retrain-{r}/metrics.json")
        rows.append(f"| {s} | {geno} | {sm.get('seconds', 0):.0f} | {r} | {rm['test_accuracy']:.4f} | "
                    f"{rm.get('seconds', 0):.0f} | {rm.get('latency_ms_batch1', 0):.2f} |")
import datetime, os, platform, re
cpu = platform.processor() or "unknown CPU"
try:
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1).strip()
except (OSError, AttributeError):
    pass
flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
kind = "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "no bf16 instructions"
when = datetime.datetime.fromtimestamp(os.path.getmtime(f"{out}/search-bf16/retrain-bf16/metrics.json"), datetime.timezone.utc)
threads = sorted({str(m(f"{out}/search-{s}/metrics.json").get("threads", "?")) for s in ("fp32", "bf16")})
rows += ["", f"Run on {os.cpu_count()} cores ({cpu}, {kind}), finished {when:%Y-%m-%d %H:%M} UTC, with "
         f"{'/'.join(threads)} thread(s) per search as the tool chose. The seconds are wall time and include whatever "
         "else the machine ran at the time."]
open("docs/results/bf16.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
