#!/usr/bin/env bash
# The main job on a fresh machine: installs the Debian packages, builds the
# vpdarts tool, then on the built-in synthetic transfer task (a small ViT
# pretrained on classes 0-4, prompts tuned on classes 5-9):
#   search -> retrain the genotype -> linear probe -> eval -> predict,
# and prints a summary table. (VPT-deep for comparison:
#   build/bin/vpdarts retrain --run demo-run --op concat)
#
#   scripts/demo.sh [OUT_DIR] [extra flags for vpdarts search...]
#
# OUT_DIR defaults to demo-run. The built-in backbone is cached in
# ${VPDARTS_CACHE:-~/.cache/vpdarts} after the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out=${1:-demo-run}
shift || true

scripts/install-deps.sh
flags=(-DCMAKE_BUILD_TYPE=Release -DVPDARTS_BUILD_BENCH=ON)   # the same build folder as scripts/test.sh
command -v ccache >/dev/null && flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build "${flags[@]}" > /dev/null
cmake --build build -j "$(nproc)" --target vpdarts_cli
tool=build/bin/vpdarts
built=$(date +%s)

echo "== search (DARTS, first order) =="
"$tool" search --out "$out" "$@"
echo "== retrain the searched genotype =="
"$tool" retrain --run "$out"
echo "== linear probe on the frozen backbone =="
"$tool" retrain --run "$out" --linear-probe --epochs 50 --quiet
echo "== eval of the retrained model file =="
"$tool" eval --model "$out/retrain/model.safetensors"
echo "== predict on a few synthetic PNG files =="
"$tool" sample --out "$out/samples" --count 5 > /dev/null
"$tool" predict --model "$out/retrain/model.safetensors" "$out"/samples/*/*.png

python3 - "$out" "$(( $(date +%s) - start ))" "$(( built - start ))" <<'PY'
import json, sys
out, total, build = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
search = json.load(open(f"{out}/metrics.json"))
rows = [("searched genotype", f"{out}/retrain/metrics.json"),
        ("linear probe", f"{out}/probe/metrics.json")]
print()
print("genotype:", ", ".join(search["genotype"]))
print("margins: ", ", ".join(f"{m:.3f}" for m in search["margins"]))
for w in search["warnings"]:
    print("warning: ", w)
print()
print(f"| method | test accuracy | trainable params | % of backbone | latency ms (batch 1) | images/s (batch 64) | train s |")
print(f"|---|---|---|---|---|---|---|")
for name, path in rows:
    m = json.load(open(path))
    print(f"| {name} | {m['test_accuracy']:.4f} | {m['trainable_params']} | {m['trainable_percent']:.3f} | "
          f"{m['latency_ms_batch1']:.2f} | {m['throughput_batch64']:.0f} | {m['seconds']:.1f} |")
print()
print(f"search {search['search_seconds']:.0f} s; demo {total} s in all (set-up and build {build} s); "
      f"files in {out}/ (genotype.json, alpha.csv, alpha.png, metrics.json, retrain/, probe/)")
PY
