#!/usr/bin/env bash
# The vpdarts tool end to end on a tiny backbone: usage errors (exit 2), a
# pretrain -> search -> retrain -> eval -> predict chain, the files each step
# leaves, resume after a kill, and clear failures (exit 1) for bad input.
#   test_cli.sh PATH/TO/vpdarts WORK_DIR
set -uo pipefail
tool=$1
work=$2
fixtures=$(cd "$(dirname "$0")/../fixtures" && pwd)
rm -rf "$work" && mkdir -p "$work/home" "$work/cache" && cd "$work" || exit 1
# Never the user's home or cache: an empty cache of our own, and HOME pointing at a fresh folder.
export VPDARTS_CACHE=$work/cache HOME=$work/home XDG_CACHE_HOME=$work/home/.cache
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect CODE PATTERN -- command...: exit code and a pattern in stdout+stderr
expect() {
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1)
  local got=$?
  [[ $got == "$code" ]] || fail "'$*' exited $got, expected $code; output: $(tail -n 3 <<<"$out")"
  grep -q -- "$pattern" <<<"$out" || fail "'$*' output lacks '$pattern'; output: $(tail -n 3 <<<"$out")"
}

json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# ---- usage errors: exit 2 with a message that names the problem
expect 2 "usage: vpdarts COMMAND" -- "$tool"
expect 2 "unknown command 'serch'" -- "$tool" serch
expect 2 "wants an integer, got 'ten'" -- "$tool" search --epochs ten
expect 2 "did you mean --epochs" -- "$tool" search --epoch 3
expect 2 "needs a value" -- "$tool" search --out
expect 2 "'first' or 'second'" -- "$tool" search --order third
expect 2 "is not a class number" -- "$tool" search --classes 5-x
expect 2 "4 operators" -- "$tool" search --op-lr-mult 1,2
expect 2 "unknown fusion operator 'bogus'" -- "$tool" search --op-lr-mult bogus=1
expect 2 "--model FILE is required" -- "$tool" predict x.png
# every flag is checked before any file is read or any model is built: the empty cache stays empty
expect 2 "appears twice" -- "$tool" search --classes 5-9,7
expect 2 "--prompts must be in" -- "$tool" search --prompts 0
expect 2 "--epochs must be >= 1" -- "$tool" retrain --epochs 0
expect 2 "--batch must be >= 1" -- "$tool" retrain --batch 0
expect 2 "unknown fusion operator 'warp'" -- "$tool" retrain --op warp --out warp-run
[[ -e warp-run ]] && fail "a refused --op left its output folder behind"
expect 2 "--val-fraction must be in (0, 1)" -- "$tool" search --val-fraction 1.5
expect 2 "--threads must be in" -- "$tool" search --threads 1000000000
expect 2 "momentum" -- "$tool" search --momentum -1
expect 2 "--count must be in" -- "$tool" sample --count 0
[[ -z $(ls cache) ]] || fail "a refused command touched the backbone cache: $(ls cache)"
[[ -z $(ls -A home) ]] || fail "a command wrote to HOME: $(ls -A home)"
echo '{"epochs": "ten"}' > badvalue.json
expect 2 "in the config file 'badvalue.json'" -- "$tool" search --config badvalue.json
echo '{"batch": 18446744073709551608}' > huge.json
expect 2 "wants an integer" -- "$tool" search --config huge.json
python3 -c "print('[' * 100000 + ']' * 100000)" > deep.json
expect 2 "nested deeper" -- "$tool" search --config deep.json
expect 2 "does not apply to --data folder" -- "$tool" retrain --data folder --train a --test b --train-images 10
echo '{"epochz": 3}' > bad.json
expect 2 "unknown key 'epochz'" -- "$tool" search --config bad.json
echo '{"epochs": ' > broken.json
expect 2 "is not JSON" -- "$tool" search --config broken.json
expect 0 "--alpha-lr" -- "$tool" search --help
expect 0 "--linear-probe" -- "$tool" retrain --help

# ---- run-time dispatch: the portable build re-executes its highest sibling the CPU runs: x86-64-v4 with
# AVX-512 (F, BW, CD, DQ, VL), x86-64-v3 with AVX2 + FMA; VPDARTS_DISPATCH=off keeps it, =v3 caps at v3
has() { for f in "$@"; do grep -qw "$f" /proc/cpuinfo || return 1; done; }
expect 0 "compiled for x86-64)" -- env VPDARTS_DISPATCH=off "$tool" --version
if [[ -x $tool-x86-64-v4 ]] && has avx2 fma bmi2 avx512f avx512bw avx512cd avx512dq avx512vl; then
  expect 0 "compiled for x86-64-v4" -- "$tool" --version
  expect 0 "compiled for x86-64-v3" -- env VPDARTS_DISPATCH=v3 "$tool" --version
elif [[ -x $tool-x86-64-v3 ]] && has avx2 fma bmi2; then
  expect 0 "compiled for x86-64-v3" -- "$tool" --version
else
  expect 0 "compiled for x86-64)" -- "$tool" --version
fi

# ---- a tiny backbone
expect 0 "wrote bb.safetensors" -- "$tool" pretrain --out bb.safetensors --image 16 --patch 4 --dim 16 --depth 2 \
  --heads 2 --mlp 32 --epochs 2 --train-images 100 --test-images 20 --batch 20
common=(--backbone bb.safetensors --prompts 2 --batch 8 --train-images 80)

# ---- search, flags from a config file (the command line wins)
cat > search.json <<'JSON'
{"epochs": 3, "warmup-epochs": 1, "w-lr": 0.05, "op_lr_mult": [1, 1, 0.5, 0.5], "order": "second", "reference-images": 0}
JSON
expect 0 "genotype (softmax weights" -- "$tool" search --config search.json --order first --out run "${common[@]}" --threads 2 --quiet
for f in genotype.json alpha.csv alpha.png alpha_trajectory.png metrics.json \
         run-{0,1,2}/{genotype.json,alpha.csv,search.safetensors,metrics.json}; do  # the default: three searches
  [[ -s run/$f ]] || fail "search left no run/$f"
done
[[ $(wc -l < run/alpha.csv) == $((1 + 3 * 2 * 4)) ]] || fail "alpha.csv has $(wc -l < run/alpha.csv) lines, expected 25"
[[ $(head -c 8 run/alpha.png | od -An -c | tr -d ' ') == '211PNG\r\n032\n' ]] || fail "alpha.png is not a PNG"
[[ $(json run/metrics.json '["genotype"].__len__()') == 2 ]] || fail "metrics.json genotype length"
ls run | grep -q tmp && fail "a temporary file was left in run/"

# ---- the cost objective: a budget of trainable values, the cost table, and the front
expect 0 "within a budget of 300" -- "$tool" search "${common[@]}" --out budget --epochs 3 --warmup-epochs 1 --runs 2 \
  --param-budget 300 --latency-runs 3 --quiet
python3 -c "import json; m = json.load(open('budget/metrics.json')); c = m['cost']
assert c['genotype_params'] <= 300 and c['budget'] == 300 and c['objective'] == 'params', c
assert len(c['lambda']) == 3 and len(c['expected_cost']) == 3 and c['expected_cost'][0] is None, c
assert len(c['params']) == 2 and len(c['latency_ms'][0]) == 4 and c['latency_runs'] == 3, c
for r in m['selection']['candidates']:
    assert r['trainable_params'] <= 300, r" || fail "a budgeted search's metrics.json breaks the budget or lacks the cost"
expect 0 "on front" -- "$tool" search "${common[@]}" --out front --epochs 2 --warmup-epochs 1 --runs 1 --select argmax \
  --pareto 2 --select-epochs 1 --latency-runs 2 --quiet
[[ -s front/front.csv && -s front/front.png && -s front/budget-1/genotype.json ]] || fail "--pareto left no front.csv, front.png or budget-1/"
[[ $(wc -l < front/front.csv) == 3 ]] || fail "front.csv has $(wc -l < front/front.csv) lines, expected 3"
[[ $(json front/metrics.json '["front"].__len__()') == 2 ]] || fail "metrics.json lacks the front"
expect 1 "below the cheapest genotype" -- "$tool" search "${common[@]}" --out tiny-budget --epochs 2 --warmup-epochs 1 --runs 1 \
  --param-budget 10 --quiet
expect 2 "exclude each other" -- "$tool" search --param-budget 10 --latency-budget 1
expect 2 "--pareto sets the budgets itself" -- "$tool" search --pareto 3 --param-budget 100
expect 2 "--pareto must be 0 or in 2..64" -- "$tool" search --pareto 1
expect 2 "--cost is 'params' or 'latency'" -- "$tool" search --cost flops
expect 2 "--cost-weight must be in 0..1e+06" -- "$tool" search --cost-weight -1
expect 2 "--cost-weight must be in 0..1e+06" -- "$tool" search --cost-weight 1e300
expect 2 "--latency-budget must be >= 0" -- "$tool" search --latency-budget -3

# ---- the w learning rate chosen from a grid on search-val
expect 0 "search: w lr" -- "$tool" search "${common[@]}" --out grid --epochs 2 --warmup-epochs 1 --w-lr-grid 0.01,0.1 --grid-epochs 1 --quiet
[[ $(json grid/metrics.json '["w_lr_grid"]["lrs"]') == "[0.01, 0.1]" ]] || fail "metrics.json lacks the lr grid"
[[ $(json grid/metrics.json '["w_lr"] in (0.01, 0.1)') == True ]] || fail "the chosen w lr is not from the grid"
expect 2 "is not a learning rate" -- "$tool" search --w-lr-grid 0.1,x

# ---- genotype selection: perturbation in the search, best of several runs with select
expect 0 "search: selection perturbation" -- "$tool" search "${common[@]}" --out pert --epochs 2 --warmup-epochs 1 --runs 1 \
  --select perturbation --finetune-epochs 1 --quiet
[[ $(json pert/metrics.json '["selection"]["rule"]') == perturbation ]] || fail "metrics.json does not name the selection rule"
[[ $(json pert/metrics.json '["selection"]["layers"].__len__()') == 2 ]] || fail "metrics.json lacks the perturbation scores"
python3 -c "import json; g = json.load(open('pert/genotype.json')); m = json.load(open('pert/metrics.json'))
assert [l['op'] for l in g['layers']] == m['genotype']" || fail "genotype.json is not the perturbation's genotype"
# the default: the best of three searches (seeds 0, 1, 2), each run's perturbation genotype scored on search-val
python3 -c "import json; m = json.load(open('run/metrics.json')); s = m['selection']; c = s['candidates']
assert s['rule'] == 'best_of_runs' and s['runs'] == 3 and s['run_rule'] == 'perturbation', s
assert [x['seed'] for x in c] == [0, 1, 2], c
runs = [json.load(open(f'run/run-{k}/metrics.json')) for k in range(3)]
assert [x['genotype'] for x in c] == [r['genotype'] for r in runs], (c, runs)
best = max(range(3), key=lambda k: c[k]['val_accuracy'])
assert c[best]['val_accuracy'] == c[int(s['best_run'][4:])]['val_accuracy'], s
g = json.load(open('run/genotype.json'))
assert [l['op'] for l in g['layers']] == m['genotype'] == c[int(s['best_run'][4:])]['genotype'], (g, m)
assert open('run/alpha.csv').read() == open('run/' + s['best_run'] + '/alpha.csv').read()" ||
  fail "the default best-of-runs search is not what metrics.json says"
expect 0 "search: selection best of 2 runs (perturbation within each)" -- "$tool" search "${common[@]}" --out pert2 \
  --epochs 2 --warmup-epochs 1 --select perturbation --runs 2 --select-epochs 1 --quiet
[[ $(json pert2/metrics.json '["selection"]["best_run_selection"]["rule"]') == perturbation ]] || fail "--runs 2 lost the run rule"
expect 0 "search: selection argmax" -- "$tool" search "${common[@]}" --out argmax --epochs 2 --warmup-epochs 1 --runs 1 --select argmax --quiet
python3 -c "import json; m = json.load(open('argmax/metrics.json'))
assert m['genotype'] == m['selection']['argmax_genotype'] and 'layers' not in m['selection']" ||
  fail "--select argmax did not keep alpha's argmax"
expect 2 "'argmax' or 'perturbation'" -- "$tool" search --select best
expect 2 "--finetune-epochs must be >= 0" -- "$tool" search --finetune-epochs -1
expect 2 "--runs must be in 1..1000, got 0" -- "$tool" search --runs 0
expect 2 "--select-epochs must be >= 1, got 0" -- "$tool" search --select-epochs 0
expect 0 "select: best" -- "$tool" select --runs grid,pert "${common[@]}" --epochs 1 --out best --quiet
[[ $(json best/metrics.json '["candidates"].__len__()') == 2 ]] || fail "select's metrics.json lacks the candidates"
[[ -s best/genotype.json ]] || fail "select wrote no genotype.json"
expect 2 "--runs DIRS is required" -- "$tool" select
expect 0 "4-fold cross-validated accuracy" -- "$tool" select --runs grid,pert "${common[@]}" --epochs 1 --folds 4 --out best-cv
[[ $(json best-cv/metrics.json '["folds"]') == 4 ]] || fail "select --folds: metrics.json does not say 4 folds"
expect 2 "--folds must be in 1..100" -- "$tool" select --runs grid --folds 0
expect 2 "--select-folds must be in 0..100" -- "$tool" search --select-folds 101
expect 2 "--reference-images must be in 0..10000000" -- "$tool" search --reference-images -1
# below --reference-images (1000) training images the counts not given scale by ceil(1000 / 80) = 13, the two
# warm-ups with --epochs (given here, so kept), and the runs are scored by 5-fold cross-validation
expect 0 "fewer than --reference-images 1000: the epoch counts not given x13 (grid-epochs 26, finetune-epochs 13)" -- \
  "$tool" search "${common[@]}" --out fitted --epochs 2 --warmup-epochs 1 --runs 2 --select-epochs 1 --quiet
python3 -c "import json; m = json.load(open('fitted/metrics.json')); s = m['selection']
f = {k: m['schedule'][k] for k in ('reference_images', 'epoch_scale', 'epochs', 'warmup_epochs', 'lr_warmup_epochs', 'select_epochs', 'select_folds', 'finetune_epochs')}
assert f == dict(reference_images=1000, epoch_scale=13, epochs=2, warmup_epochs=1, lr_warmup_epochs=1, select_epochs=1, select_folds=5, finetune_epochs=13), f
assert s['select_folds'] == 5 and s['best_run_selection']['finetune_epochs'] == 13, s" ||
  fail "the fitted schedule is not what metrics.json says"
# from 1000 images on (or with --reference-images 0, or counts given) nothing changes; --select-folds given stays
expect 0 "search: selection best of 2 runs" -- "$tool" search "${common[@]}" --out unfitted --epochs 2 --warmup-epochs 1 --runs 2 \
  --select-epochs 1 --finetune-epochs 1 --select-folds 1 --reference-images 0 --quiet
python3 -c "import json; m = json.load(open('unfitted/metrics.json'))['schedule']
assert m['epoch_scale'] == 1 and m['select_folds'] == 1 and m['finetune_epochs'] == 1, m" || fail "--reference-images 0 still scaled"
expect 1 "no genotype at 'nowhere/genotype.json'" -- "$tool" select --runs grid,nowhere "${common[@]}" --quiet

# ---- resume: kill a second run once it has a checkpoint, resume it, compare with the first
mkdir -p again
( "$tool" search --config search.json --order first --out again "${common[@]}" --threads 2 --quiet > again.log 2>&1 ) &
pid=$!
for _ in $(seq 1 600); do [[ -f again/run-0/search.safetensors ]] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
[[ -f again/run-0/search.safetensors ]] || fail "no checkpoint after the first epoch"
expect 0 "genotype" -- "$tool" search --config search.json --order first --out again "${common[@]}" --threads 2 --quiet --resume
cmp -s run/genotype.json again/genotype.json || fail "resumed genotype.json differs from the uninterrupted run"
cmp -s run/alpha.csv again/alpha.csv || fail "resumed alpha.csv differs from the uninterrupted run"
# a resumed search runs with the thread count its checkpoint records (the default follows the free cores,
# and a product split over other counts rounds differently)
/usr/bin/env python3 -c "import json, struct; f = open('again/run-0/search.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]
assert json.loads(f.read(n))['__metadata__']['vpdarts.search.threads'] == '2'" || fail "the checkpoint does not record its threads"
expect 0 "search: selection perturbation" -- "$tool" search "${common[@]}" --out one --epochs 2 --warmup-epochs 1 --runs 1 --threads 1 --quiet
if (($(nproc) > 1)); then
  expect 0 "threads: 1, as the search being resumed ran" -- env -u OMP_NUM_THREADS "$tool" search "${common[@]}" --out one \
    --epochs 2 --warmup-epochs 1 --runs 1 --resume
fi
expect 1 "settings differ" -- "$tool" search --config search.json --order first --out again "${common[@]}" --threads 2 --quiet --resume --w-lr 0.07

# ---- precision: bf16 where this build and CPU have it, a clear refusal (exit 2) where not
expect 2 "--precision must be fp32, bf16 or auto, got 'fp16'" -- "$tool" search --precision fp16
expect 2 "--precision bf16 is not available here: " -- env ONEDNN_MAX_CPU_ISA=AVX2 "$tool" search --precision bf16
# the frozen float32 products: oneDNN in a build with it (auto), Eigen on request; the tool says which
expect 2 "--fp32-gemm must be auto, eigen or onednn, got 'blas'" -- "$tool" search --fp32-gemm blas
if "$tool" --version | grep -q "^fp32 products: oneDNN"; then
  expect 0 "fp32 products: oneDNN (auto: vpdarts was built with oneDNN" -- "$tool" search "${common[@]}" --out gemm \
    --epochs 2 --warmup-epochs 1 --runs 1
  [[ $(json gemm/metrics.json '["fp32_gemm"]') == onednn ]] || fail "metrics.json does not say fp32_gemm onednn"
  expect 0 "fp32 products: Eigen" -- "$tool" search "${common[@]}" --out gemm-eigen --epochs 2 --warmup-epochs 1 \
    --runs 1 --fp32-gemm eigen --quiet
  [[ $(json gemm-eigen/metrics.json '["fp32_gemm"]') == eigen ]] || fail "metrics.json does not say fp32_gemm eigen"
else
  expect 2 "--fp32-gemm onednn is not available" -- "$tool" search --fp32-gemm onednn
fi
expect 0 "precision: fp32 (auto: " -- env ONEDNN_MAX_CPU_ISA=AVX2 "$tool" search "${common[@]}" --out auto32 --epochs 2 \
  --warmup-epochs 1 --precision auto --quiet
[[ $(json auto32/metrics.json '["precision"]') == fp32 ]] || fail "auto without bf16: metrics.json does not say fp32"
out=$("$tool" search "${common[@]}" --out auto --epochs 2 --warmup-epochs 1 --precision auto --quiet 2>&1) ||
  fail "search --precision auto exited $?: $out"
if grep -q "^precision: bf16 (frozen products on oneDNN's" <<< "$out"; then
  [[ $(json auto/metrics.json '["precision"]') == bf16 ]] || fail "a bf16 search: metrics.json does not say bf16"
  expect 0 "test accuracy" -- "$tool" retrain --run auto "${common[@]}" --epochs 1 --test-images 40 --quiet --precision bf16
  [[ $(json auto/retrain/metrics.json '["precision"]') == bf16 ]] || fail "a bf16 retrain: metrics.json does not say bf16"
else
  grep -q "^precision: fp32 (auto: " <<< "$out" || fail "--precision auto did not say which precision ran: $out"
  expect 2 "--precision bf16 is not available here: " -- "$tool" search --precision bf16
fi

# ---- retrain the genotype, a single operator, a linear probe
expect 0 "test accuracy" -- "$tool" retrain --run run "${common[@]}" --epochs 2 --test-images 40 --quiet
for key in test_accuracy trainable_params trainable_percent latency_ms_batch1 latency_ms_batch1_p10 latency_ms_batch1_p90 \
           latency_runs multiply_adds_batch1 throughput_batch64 peak_rss_mb seconds; do
  json run/retrain/metrics.json "['$key']" > /dev/null 2>&1 || fail "retrain metrics.json lacks $key"
done
[[ $(json run/metrics.json '["command"]') == search ]] || fail "retrain overwrote the search's metrics.json"
expect 0 "test accuracy" -- "$tool" retrain --run run --op concat "${common[@]}" --epochs 1 --test-images 40 --quiet
# below 1000 images, retraining without --epochs says how few updates its default makes (80 images: 1/13)
expect 0 "1/13 of what they are at 1000 images; --epochs 260" -- "$tool" retrain --run run --op add "${common[@]}" \
  --test-images 10 --out few-updates --quiet
"$tool" retrain --run run --op add "${common[@]}" --epochs 1 --test-images 10 --out given-epochs --quiet 2>&1 |
  grep -q "warning: retrain: 80 training images" && fail "retrain warned about the epochs although --epochs was given"
expect 0 "test accuracy" -- "$tool" retrain --run run --linear-probe "${common[@]}" --epochs 3 --test-images 40 --quiet
[[ $(json run/probe/metrics.json '["method"]') == linear_probe ]] || fail "no run/probe/metrics.json"
# the lr grid protocol: chosen on search-val (a split of the training images), then trained on all of them
expect 0 "retrain: lr " -- "$tool" retrain --run run --op add "${common[@]}" --epochs 1 --lr-grid 0.01,0.2 --test-images 40 \
  --widen-grid 0 --out grid-add --quiet
[[ $(json grid-add/metrics.json '["lr_grid"]["lrs"]') == "[0.01, 0.2]" ]] || fail "retrain's metrics.json lacks the lr grid"
[[ $(json grid-add/metrics.json '["lr"]') == "$(json grid-add/metrics.json '["lr_grid"]["best"]')" ]] || fail "retrain did not train at the grid's best lr"
expect 0 "retrain: lr " -- "$tool" retrain --run run --linear-probe "${common[@]}" --epochs 3 --lr-grid 0.01,0.2 \
  --test-images 40 --out grid-probe --quiet
# weight decays and prompt counts in the grid (VPT's protocol), and a grid that widens past an edge
expect 0 "retrain: the grid widened" -- "$tool" retrain --run run --op concat "${common[@]}" --epochs 1 --lr-grid 0.01,0.2 \
  --wd-grid 0,1e-4 --prompts-grid 1,2 --grid-epochs 1 --test-images 40 --out grid-concat --quiet
python3 -c "import json; m = json.load(open('grid-concat/metrics.json')); g = m['lr_grid']
assert [p['prompts'] for p in m['prompts_grid']] == [1, 2], m['prompts_grid']
assert m['prompts'] in (1, 2) and m['lr'] == g['best'] and m['weight_decay'] == g['best_weight_decay']
assert set(g['weight_decays']) >= {0, 1e-4} and g['widened'] and len(g['lrs']) > 4, g
chosen = [p for p in m['prompts_grid'] if p['prompts'] == m['prompts']][0]['grid']
assert chosen['best_accuracy'] == max(p['grid']['best_accuracy'] for p in m['prompts_grid'])" ||
  fail "retrain's metrics.json does not record the lr, weight-decay and prompt grid as chosen"
expect 2 "uses no prompt tokens" -- "$tool" retrain --run run --op add "${common[@]}" --lr-grid 0.01 --prompts-grid 1,8 --out x
expect 2 "give --lr-grid too" -- "$tool" retrain --wd-grid 0,1e-4
expect 2 "is not a number >= 0" -- "$tool" retrain --lr-grid 0.1 --wd-grid 0,-1
expect 2 "is not a prompt count" -- "$tool" retrain --lr-grid 0.1 --prompts-grid 1.5
expect 2 "does not apply to the linear probe" -- "$tool" retrain --linear-probe --lr-grid 0.1 --prompts-grid 1,8
expect 2 "is not a learning rate" -- "$tool" retrain --lr-grid 0.1,-2
expect 2 "appears twice" -- "$tool" retrain --lr-grid 0.1,0.5,0.10
expect 2 "--val-fraction must be in (0, 1)" -- "$tool" retrain --val-fraction 1

# ---- eval gives the accuracy retrain measured on the same test images
expect 0 "test accuracy" -- "$tool" eval --model run/op-concat/model.safetensors --test-images 40
[[ $(json run/op-concat/eval/metrics.json '["test_accuracy"]') == $(json run/op-concat/metrics.json '["test_accuracy"]') ]] ||
  fail "eval accuracy $(json run/op-concat/eval/metrics.json '["test_accuracy"]') differs from retrain's"

# ---- predict prints file, label, probability
out=$("$tool" predict --model run/retrain/model.safetensors --top 2 run/alpha.png 2>&1)
grep -qE '^run/alpha.png	(dots|rings|solid|grid|waves)	[01]\.[0-9]{4}	' <<<"$out" || fail "predict printed '$out'"

# ---- export writes a PyTorch module (tests/python checks its logits against vpdarts')
expect 0 "as a PyTorch module in torch-export" -- "$tool" export --model run/retrain/model.safetensors --to torch-export
for f in vpdarts_model.py config.json model.safetensors; do [[ -s torch-export/$f ]] || fail "export wrote no torch-export/$f"; done
[[ "$(json torch-export/config.json '["genotype"]')" == "$(json run/retrain/metrics.json '["genotype"]')" ]] ||
  fail "export's config.json has another genotype than the model's"
expect 2 "--to DIR is required" -- "$tool" export --model run/retrain/model.safetensors
expect 1 "does not exist" -- "$tool" export --model no-such.safetensors --to torch-none

# ---- sample writes an image folder; predict reads the files back
expect 0 "samples/dots/" -- "$tool" sample --out samples --count 6 --image 16
[[ $(find samples -name '*.png' | wc -l) == 6 ]] || fail "sample wrote $(find samples -name '*.png' | wc -l) files, expected 6"
out=$("$tool" predict --model run/retrain/model.safetensors samples/*/*.png 2>&1)
[[ $(grep -cE '	(dots|rings|solid|grid|waves)	[01]\.[0-9]{4}$' <<<"$out") == 6 ]] || fail "predict on samples printed '$out'"

# ---- image folders (written by sample) and IDX files (plain and gzipped) as data
"$tool" sample --out ftrain --count 40 --image 16 > /dev/null
"$tool" sample --out ftest --count 20 --image 12 --data-seed 9 > /dev/null   # another size: resized on load
folder=(--data folder --train ftrain --test ftest --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 --quiet)
expect 0 "data: 40 images of 5 classes from ftrain" -- "$tool" retrain --run run --op add "${folder[@]}" --out folder-run --crop-padding 2 --flip
[[ $(json folder-run/metrics.json '["test_images"]') == 20 ]] || fail "folder retrain did not test on 20 images"
# eval maps test folders to the model's classes by name: a test folder of two classes scores as retrain did
mkdir -p two && cp -r ftest/rings ftest/waves two/
expect 0 "test accuracy" -- "$tool" eval --model folder-run/model.safetensors --data folder --test two
mkdir -p alien/zebra && cp ftest/rings/* alien/zebra/
expect 1 "class 'zebra' is not one of" -- "$tool" eval --model folder-run/model.safetensors --data folder --test alien
echo "not an image" > ftrain/dots/bad.png
expect 1 "bad.png" -- "$tool" retrain --run run --op add "${folder[@]}" --out folder-run
expect 0 "skipped 1 unreadable" -- "$tool" retrain --run run --op add "${folder[@]}" --out folder-run --skip-bad
expect 2 "needs --test PATH" -- "$tool" retrain --run run --op add --data folder --train ftrain --backbone bb.safetensors
python3 - <<'PY'
import gzip, os, random, struct
random.seed(0)
os.makedirs("idx", exist_ok=True)
def write(name, dims, values, gz):
    data = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(values)
    (gzip.open if gz else open)(os.path.join("idx", name + (".gz" if gz else "")), "wb").write(data)
for stem, n, gz in (("train", 60, True), ("t10k", 30, False)):
    labels = [i % 3 for i in range(n)]
    write(f"{stem}-images-idx3-ubyte", (n, 8, 8), [random.randrange(256) for _ in range(n * 64)], gz)
    write(f"{stem}-labels-idx1-ubyte", (n,), labels, gz)
PY
expect 0 "data: 20 t10k images of 2 classes" -- "$tool" retrain --run run --op affine --data idx --train idx --test idx \
  --classes 1,2 --train-images 20 --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 --quiet --out idx-run
head -c 100 idx/t10k-images-idx3-ubyte > idx/t10k-images-idx3-ubyte.cut && mv idx/t10k-images-idx3-ubyte.cut idx/t10k-images-idx3-ubyte
expect 1 "t10k-images-idx3-ubyte" -- "$tool" retrain --run run --op affine --data idx --train idx --test idx \
  --classes 1,2 --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 --quiet --out idx-run

# ---- a foundation backbone as timm saves it (DINOv2 with 4 registers, 518 px), run at another size
reg4=$fixtures/timm/dinov2_reg4/backbone.safetensors
expect 2 "nearest known: vit_small_patch14_dinov2" -- "$tool" search --backbone "$reg4" --arch vit_small_patch14_dinov
expect 2 "describe a --backbone FILE" -- "$tool" search --arch vit_small_patch14_dinov2
expect 1 "not a multiple of the patch 14" -- "$tool" search --backbone "$reg4" --heads 2 --image 50 --out x
foundation=(--backbone "$reg4" --arch vit_small_patch14_reg4_dinov2 --heads 2 --image 28 --prompts 2 --batch 8 --train-images 40 --quiet)
expect 0 "4 registers, pos_embed without prefix, LayerScale" -- "$tool" search "${foundation[@]}" --out reg4 --epochs 2 --warmup-epochs 1
expect 0 "test accuracy" -- "$tool" retrain --run reg4 "${foundation[@]}" --op concat --epochs 1 --test-images 20
expect 0 "test accuracy" -- "$tool" eval --model reg4/op-concat/model.safetensors --test-images 20   # no backbone flags: the file says it all

# ---- bad input: exit 1, a message that names it
expect 1 "does not exist" -- "$tool" search --backbone missing.safetensors --out x
echo "not a checkpoint" > junk.safetensors
expect 1 "junk.safetensors" -- "$tool" search --backbone junk.safetensors --out x
expect 1 "1 class" -- "$tool" search "${common[@]}" --classes 5 --out x --epochs 2 --warmup-epochs 1
expect 1 "does not fit" -- "$tool" search "${common[@]}" --batch 50 --out x
python3 -c "
import json; g = json.load(open('run/genotype.json')); g['layers'] = g['layers'] * 3
json.dump(g, open('deep.json', 'w'))"
expect 1 "6 layers but the backbone has 2" -- "$tool" retrain "${common[@]}" --genotype deep.json --out x
expect 1 "no genotype at 'nowhere/genotype.json'" -- "$tool" retrain "${common[@]}" --run nowhere
expect 1 "NaN" -- "$tool" search "${common[@]}" --out nan --epochs 2 --warmup-epochs 1 --w-lr 1e30 --grad-clip 0
[[ -f nan/search.safetensors ]] && fail "a NaN search wrote a checkpoint"
expect 1 "not a readable image" -- "$tool" predict --model run/retrain/model.safetensors junk.safetensors
expect 1 "not a vpdarts model file" -- "$tool" predict --model bb.safetensors run/alpha.png

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "cli: all checks passed"
