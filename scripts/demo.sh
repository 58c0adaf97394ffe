#!/usr/bin/env bash
# The main job on a fresh machine: installs the Debian packages, builds the
# vpdarts tool, then on the built-in synthetic transfer task (a small ViT
# pretrained on classes 0-4, prompts tuned on classes 5-9):
#   search -> retrain the genotype -> every single operator at every layer (concat is
#   VPT-deep) -> linear probe -> eval -> predict,
# and prints one table of them all, so that the searched genotype is seen against the
# best single operator and VPT-deep. Every method trains with the same settings.
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
for op in concat add affine cross_attention; do
  echo "== $op at every layer$([[ $op == concat ]] && echo " (VPT-deep)") =="
  "$tool" retrain --run "$out" --op "$op" --quiet | tail -n 1
done
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
rows = [("searched genotype", "retrain"), ("concat (VPT-deep)", "op-concat"), ("add", "op-add"),
        ("affine", "op-affine"), ("cross_attention", "op-cross_attention"), ("linear probe", "probe")]
ms = {name: json.load(open(f"{out}/{sub}/metrics.json")) for name, sub in rows}
print()
print("genotype:", ", ".join(search["genotype"]))
print("margins: ", ", ".join(f"{m:.3f}" for m in search["margins"]))
sel = search["selection"]
if sel["rule"] == "best_of_runs":
    print(f"selection: the best of {sel['runs']} searches on search-val ({sel['best_run']}); the candidates:")
    for c in sel["candidates"]:
        print(f"  {c['run']} (seed {c['seed']}): {', '.join(c['genotype'])}: search-val accuracy {c['val_accuracy']:.3f}")
else:
    print("selection:", sel["rule"])
for w in search["warnings"]:
    print("warning: ", w)
print()
print(f"| method | test accuracy | trainable params | % of backbone | latency ms (batch 1) | images/s (batch 64) | train s |")
print(f"|---|---|---|---|---|---|---|")
for name, _ in rows:
    m = ms[name]
    print(f"| {name} | {m['test_accuracy']:.4f} | {m['trainable_params']} | {m['trainable_percent']:.3f} | "
          f"{m['latency_ms_batch1']:.2f} | {m['throughput_batch64']:.0f} | {m['seconds']:.1f} |")
singles = [n for n, sub in rows if sub.startswith("op-")]
best = max(singles, key=lambda n: ms[n]["test_accuracy"])
g, b, v = ms["searched genotype"], ms[best], ms["concat (VPT-deep)"]
print()
print(f"searched genotype against the best single operator here ({best}): "
      f"{(g['test_accuracy'] - b['test_accuracy']) * 100:+.2f} points with {g['trainable_params']} trainable values "
      f"against {b['trainable_params']}; against VPT-deep: {(g['test_accuracy'] - v['test_accuracy']) * 100:+.2f} points; "
      f"against the linear probe: {(g['test_accuracy'] - ms['linear probe']['test_accuracy']) * 100:+.2f} points.")
print(f"(one seed of a small built-in task: scripts/fashion_study.sh measures the methods over seeds and tasks)")
print()
print(f"search {search['search_seconds']:.0f} s; demo {total} s in all (set-up and build {build} s); files in {out}/:")
print(f"  alpha.png (softmax(alpha) after the search), alpha_trajectory.png (over the epochs), alpha.csv,")
print(f"  genotype.json, metrics.json, retrain/, op-*/, probe/" + (", run-*/ (each search)" if sel["rule"] == "best_of_runs" else ""))
PY
