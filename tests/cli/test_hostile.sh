#!/usr/bin/env bash
# The vpdarts tool against what a hostile user found (issue 45): a model file with a mis-shaped head,
# retrain over a finished folder when its writes fail, folders given as files, bad values that are
# usage errors (exit 2), the full seed range, status on stderr and results alone on stdout, a resume
# over another kind of search folder, names too long to write, select naming the run folder, dangling
# symbolic links, memory limits of the process, and class folders whose names are not UTF-8.
#   test_hostile.sh PATH/TO/vpdarts WORK_DIR
set -uo pipefail
tool=$1
work=$2
rm -rf "$work" && mkdir -p "$work/home" "$work/cache" && cd "$work" || exit 1
export VPDARTS_CACHE=$work/cache HOME=$work/home XDG_CACHE_HOME=$work/home/.cache
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect() {  # expect CODE PATTERN -- command...: exit code and a pattern in stdout+stderr
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1)
  local got=$?
  [[ $got == "$code" ]] || fail "'$*' exited $got, expected $code; output: $(tail -n 3 <<<"$out")"
  grep -q -- "$pattern" <<<"$out" || fail "'$*' output lacks '$pattern'; output: $(tail -n 3 <<<"$out")"
}
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# ---- bad values are usage errors (exit 2) that name the flag, before any work
expect 2 "--image 4: the synthetic images need at least 8 pixels" -- "$tool" pretrain --image 4 --patch 4 --out p.safetensors
expect 2 "--channels must be 1 (grey) or 3 (RGB), got 2" -- "$tool" pretrain --channels 2 --out p.safetensors
expect 2 "class 300 cannot be an IDX label" -- "$tool" search --data idx --train idx --classes 5,300
expect 2 "class 10 is not one of the synthetic task's classes 0-9" -- "$tool" search --classes 5,10
expect 2 "--image 4: the synthetic images need at least 8 pixels" -- "$tool" sample --image 4
[[ -z $(ls cache) ]] || fail "a refused command touched the backbone cache: $(ls cache)"
[[ -e p.safetensors ]] && fail "a refused pretrain wrote its output"
# the whole range of a 64-bit seed; past it, the range is said
expect 2 "--seed wants an integer in 0..18446744073709551615, got '18446744073709551616'" -- \
  "$tool" search --seed 18446744073709551616
expect 2 "--seed wants an integer in 0..18446744073709551615, got '-1'" -- "$tool" search --seed -1
# folders where files are wanted
mkdir -p adir
expect 2 "the config file 'adir' is a folder" -- "$tool" search --config adir

# ---- a tiny backbone, a search and a retrained model
expect 0 "wrote bb.safetensors" -- "$tool" pretrain --out bb.safetensors --image 16 --patch 4 --dim 16 --depth 2 \
  --heads 2 --mlp 32 --epochs 1 --train-images 60 --test-images 20 --batch 20 --quiet
common=(--backbone bb.safetensors --prompts 2 --batch 8 --train-images 48 --quiet)
expect 2 "--image 4: the synthetic images need at least 8 pixels" -- "$tool" search "${common[@]}" --image 4
expect 1 "'adir' is a folder, not a checkpoint file" -- "$tool" search --backbone adir --out x
expect 0 "search:" -- "$tool" search "${common[@]}" --out run --epochs 2 --warmup-epochs 1 --runs 1 --select argmax --seed 18446744073709551615
[[ $(json run/metrics.json '["genotype"].__len__()') == 2 ]] || fail "the search with the largest seed wrote no genotype"
expect 1 "'adir' is a folder, not a genotype file" -- "$tool" retrain "${common[@]}" --genotype adir --out x --epochs 1
expect 0 "test accuracy" -- "$tool" retrain --run run "${common[@]}" --epochs 1 --test-images 20 --op add --out rt

# ---- a model file whose head does not fit is refused, naming the tensor and both shapes
python3 - <<'PY'
import json, struct
raw = open("rt/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
def forge(name, tensor, shape):
    h = {k: dict(v) for k, v in header.items() if k != "__metadata__"}
    parts, off = [], 0
    for k in sorted(h, key=lambda k: h[k]["data_offsets"][0]):
        a, b = h[k]["data_offsets"]
        chunk = data[a:b]
        if k == tensor:
            count = 1
            for d in shape:
                count *= d
            chunk = (chunk * (count // max(1, len(chunk) // 4) + 1))[:4 * count]
            h[k]["shape"] = shape
        h[k]["data_offsets"] = [off, off + len(chunk)]
        parts.append(chunk)
        off += len(chunk)
    h["__metadata__"] = header["__metadata__"]
    text = json.dumps(h).encode()
    open(name, "wb").write(struct.pack("<Q", len(text)) + text + b"".join(parts))
forge("h563.safetensors", "head.weight", [5, 15])
forge("h1d.safetensors", "head.weight", [80])
forge("h3d.safetensors", "head.weight", [1, 5, 16])
forge("bias2d.safetensors", "head.bias", [1, 5])
PY
for f in h563 h1d h3d bias2d; do
  expect 1 "is ([0-9, ]*), but 5 class names and a backbone of width 16 need (" -- "$tool" predict --model $f.safetensors run/alpha.png
  expect 1 "$f.safetensors" -- "$tool" eval --model $f.safetensors --test-images 10 --out ev-$f
done

# ---- status on stderr, results alone on stdout
out=$("$tool" predict --model rt/model.safetensors --fp32-gemm eigen --threads 1 run/alpha.png 2>/dev/null)
[[ $(wc -l <<<"$out") == 1 ]] && grep -qE '^run/alpha.png	[a-z]+	[01]\.[0-9]{4}$' <<<"$out" ||
  fail "predict printed more than its result on stdout: '$out'"
out=$("$tool" predict --model rt/model.safetensors --precision auto --recompute-mlp run/alpha.png 2>/dev/null)
[[ $(wc -l <<<"$out") == 1 ]] || fail "predict --precision auto printed more than its result on stdout: '$out'"

# ---- retrain over a finished folder keeps the old pair when a write fails
cp rt/model.safetensors rt-old-model && cp rt/metrics.json rt-old-metrics
# a disk that takes only a small file: the model (about 20 kB here) cannot be written
out=$(bash -c "trap '' XFSZ; ulimit -f 8; exec \"$tool\" retrain --run run ${common[*]} --epochs 1 --test-images 20 --op add --out rt --seed 9" 2>&1)
[[ $? == 1 ]] || fail "retrain onto a full disk did not exit 1: $out"
cmp -s rt/model.safetensors rt-old-model || fail "a failed retrain changed the old model"
cmp -s rt/metrics.json rt-old-metrics || fail "a failed retrain lost or changed the old metrics.json"
ls rt | grep -q tmp && fail "a failed retrain left a temporary in rt/: $(ls rt)"
# a class folder whose name is not UTF-8 is refused before any training
"$tool" sample --out ftrain --count 20 --image 16 > /dev/null
python3 -c "import os; os.rename(b'ftrain/dots', b'ftrain/d\xe9ts')"
expect 1 "is not valid UTF-8" -- "$tool" retrain --run run --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 \
  --op add --data folder --train ftrain --test ftrain --out rt --quiet
cmp -s rt/metrics.json rt-old-metrics || fail "a refused retrain changed the old metrics.json"
python3 -c "import os; os.rename(b'ftrain/d\xe9ts', b'ftrain/dots')"
# a dangling symbolic link is an unreadable file: refused, or skipped and reported with --skip-bad
ln -s nowhere.png ftrain/dots/dangling.png
expect 1 "dangling.png' is a symbolic link to 'nowhere.png', which does not exist" -- "$tool" retrain --run run \
  --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 --op add --data folder --train ftrain --test ftrain --out fr
expect 0 "skipped 1 unreadable" -- "$tool" retrain --run run --backbone bb.safetensors --prompts 2 --batch 8 --epochs 1 \
  --op add --data folder --train ftrain --test ftrain --out fr --skip-bad

# ---- --resume over a folder of the other kind of search
expect 1 "holds the checkpoint of one search" -- "$tool" search "${common[@]}" --out run --epochs 2 --warmup-epochs 1 \
  --runs 2 --resume
[[ -e run/run-0 ]] && fail "a refused --runs 2 --resume started a search in run/run-0"
mkdir -p multi/run-0 && cp run/search.safetensors multi/run-0/
expect 1 "holds the checkpoints of several searches" -- "$tool" search "${common[@]}" --out multi --epochs 2 \
  --warmup-epochs 1 --runs 1 --resume

# ---- names: one that fits is written whole (its temporary too); one that cannot be written is refused first
long=$(printf 'b%.0s' $(seq 1 248))
expect 0 "wrote $long" -- "$tool" pretrain --out "$long" --image 16 --patch 4 --dim 16 --depth 2 --heads 2 --mlp 32 \
  --epochs 1 --train-images 20 --test-images 10 --batch 10 --quiet
[[ -s $long ]] || fail "a 248-character output name was not written"
deep=$(python3 -c "print('/'.join(['d' * 200] * 20 + ['e' * 49]))")  # a folder of 4069 characters: its files do not fit
expect 2 "a path may have" -- "$tool" search "${common[@]}" --out "$deep" --epochs 2 --warmup-epochs 1
[[ -e ${deep%%/*} ]] && fail "a refused --out made its folders"
expect 2 "over the 255 a file name may have" -- "$tool" pretrain --out "$(printf 'n%.0s' $(seq 1 256))" --epochs 1

# ---- select names the run folder whose genotype holds an unknown operator
mkdir -p bogus && python3 -c "
import json; g = json.load(open('run/genotype.json')); g['layers'][0]['op'] = 'warp'
json.dump(g, open('bogus/genotype.json', 'w'))"
expect 1 "the run folder 'bogus'" -- "$tool" select --runs run,bogus "${common[@]}" --epochs 1 --out sel

# ---- the memory checks know the process's limit (ulimit -v), not only the machine's memory
if (ulimit -v 2000000; "$tool" --version) > /dev/null 2>&1; then  # (a sanitizer build cannot start under the limit)
  out=$(bash -c "ulimit -v 2000000; exec \"$tool\" search ${common[*]} --train-images 1000000 --out big" 2>&1)
  code=$?
  [[ $code == 1 ]] || fail "--train-images 1000000 under ulimit -v exited $code: $out"
  grep -q -- "--train-images 1000000" <<<"$out" && grep -q "ulimit -v" <<<"$out" ||
    fail "--train-images 1000000 under ulimit -v: the message names neither the flag nor the limit: $out"
fi

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "hostile: all checks passed"
