#!/usr/bin/env bash
# vpdarts against the PyTorch peer on the reference workloads (docs/method.md, section 7), side by side in
# one run: builds bench/vpdarts_bench in Release, installs the peer's Debian
# packages (python3-torch, OpenBLAS), runs vpdarts and the peer in turn
# (A B A B) for every workload, mode and precision, measures the matmul roofs
# (Eigen's float32 SGEMM, oneDNN's float32 matmul in a build with oneDNN; oneDNN's bf16 matmul where
# the CPU has bf16), and
# writes docs/results/performance.md (keeping what follows its
# "<!-- hand-written below -->" line).
#
#   scripts/bench.sh            (env: WORKLOADS="toy tiny16", MODES="first second infer",
#                                PRECISIONS="fp32 bf16" (bf16 only where available; vpdarts --precision p
#                                against the peer's --dtype p),
#                                STEPS=3, INFER_STEPS=20, THREADS=2, ROUNDS=2, PEER=../shared/peers/torch_search_bench.py,
#                                MERGE=1 to re-run only the given workloads, modes and precisions and keep the other rows,
#                                BUSY="toy" the workloads also measured with a busy loop holding one core, BUSY="" none)
# The busy rows run each side's first-order step and inference again while the script's own busy loop
# (one process spinning) shares the machine, and report each side's slowdown against its quiet row.
set -euo pipefail
cd "$(dirname "$0")/.."
workloads=${WORKLOADS:-toy tiny16}
modes=${MODES:-first second infer}
steps=${STEPS:-3}
infer_steps=${INFER_STEPS:-20}  # an inference step is milliseconds: a median of 3 is noise
threads=${THREADS:-2}
rounds=${ROUNDS:-2}  # each side's runs per row, alternating (base16's fp32 peer step takes minutes: ROUNDS=1)
peer=${PEER:-../shared/peers/torch_search_bench.py}
[[ -f $peer ]] || { echo "bench.sh: the peer '$peer' is missing (set PEER=path/to/torch_search_bench.py)" >&2; exit 1; }

scripts/install-deps.sh --bench
flags=(-DCMAKE_BUILD_TYPE=Release -DVPDARTS_BUILD_BENCH=ON)
command -v ccache >/dev/null && flags+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build "${flags[@]}" > /dev/null
cmake --build build -j "$(nproc)" --target vpdarts_bench vpdarts_ops_bench
precisions=${PRECISIONS:-fp32 bf16}
if [[ $precisions == *bf16* ]] && ! build/bench/vpdarts_bench --roof bf16 --threads 1 > /dev/null 2> build/bf16-why.txt; then
  echo "bench.sh: bf16 is not available here, fp32 only: $(cat build/bf16-why.txt)"
  precisions=${precisions//bf16/}
fi
raw=build/bench-results.txt
if [[ ${MERGE:-0} == 1 && ! -f $raw ]]; then
  # the other rows live only in the raw results of an earlier run in this build folder
  echo "bench.sh: MERGE=1 needs $raw from an earlier run here (a fresh checkout has none); run without MERGE" >&2
  exit 2
fi
if [[ ${MERGE:-0} == 1 && -f $raw ]]; then  # drop the rows about to be re-measured, and the roofs
  keep=$(mktemp)
  grep -v '^ROOF' "$raw" | while IFS= read -r line; do
    for w in $workloads; do for mode in $modes; do for p in $precisions; do
      label=$w
      [[ $p == bf16 ]] && label=$w-bf16
      [[ ( $line == *"workload=$w mode=$mode "* && $line == *"precision=$p"* ) || $line == "PEER | $label | $mode |"* ]] &&
        continue 4
    done; done; done
    echo "$line"
  done > "$keep"
  mv "$keep" "$raw"
else
  : > "$raw"
fi
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
for w in $workloads; do
  for mode in $modes; do
    for p in $precisions; do
      for round in $(seq 1 "$rounds"); do
        echo "bench.sh: $w $mode $p, round $round: vpdarts"
        n=$steps
        [[ $mode == infer ]] && n=$infer_steps
        build/bench/vpdarts_bench --workload "$w" --mode "$mode" --steps "$n" --threads "$threads" --precision "$p" |
          tee -a "$raw"
        echo "bench.sh: $w $mode $p, round $round: peer"
        /usr/bin/python3 "$peer" --workload "$w" --mode "$mode" --steps "$n" --threads "$threads" --dtype "$p" --no-header |
          sed 's/^/PEER /' | tee -a "$raw"
      done
    done
  done
done
# A machine that is not ours alone: the same steps beside a busy loop that holds one core.
busy_pid=""
stop_busy() {
  if [[ -n $busy_pid ]]; then kill "$busy_pid" 2>/dev/null || true; wait "$busy_pid" 2>/dev/null || true; fi
  busy_pid=""
}
trap stop_busy EXIT
[[ -n ${BUSY-toy} ]] && sed -i '/^BUSY/d' "$raw"  # BUSY, BUSY_AUTO and BUSY_PEER lines
for w in ${BUSY-toy}; do
  for mode in first infer; do
    [[ " $modes " == *" $mode "* ]] || continue
    for p in $precisions; do
      n=$steps
      [[ $mode == infer ]] && n=$infer_steps
      for round in $(seq 1 "$rounds"); do
        echo "bench.sh: $w $mode $p beside a busy loop, round $round: vpdarts, then the peer"
        (while :; do :; done) & busy_pid=$!
        build/bench/vpdarts_bench --workload "$w" --mode "$mode" --steps "$n" --threads "$threads" --precision "$p" |
          sed 's/^/BUSY /' | tee -a "$raw"
        # the tool's default thread count: the cores the busy loop leaves free, measured at start
        env -u OMP_NUM_THREADS build/bench/vpdarts_bench --workload "$w" --mode "$mode" --steps "$n" --threads 0 --precision "$p" |
          sed 's/^/BUSY_AUTO /' | tee -a "$raw"
        /usr/bin/python3 "$peer" --workload "$w" --mode "$mode" --steps "$n" --threads "$threads" --dtype "$p" --no-header |
          sed 's/^/BUSY_PEER /' | tee -a "$raw"
        stop_busy
      done
    done
  done
done
# The roof of the build the benchmark ran (x86-64-v3 when the CPU has it) and of the portable build.
build/bench/vpdarts_ops_bench --benchmark_filter=bm_eigen_gemm 2>/dev/null | grep "Eigen SGEMM" | sed 's/^/ROOF /' | tee -a "$raw"
VPDARTS_DISPATCH=off build/bench/vpdarts_ops_bench --benchmark_filter=bm_eigen_gemm 2>/dev/null | grep "Eigen SGEMM" |
  sed 's/^/ROOF_PORTABLE /' | tee -a "$raw"
[[ $precisions == *bf16* ]] && build/bench/vpdarts_bench --roof bf16 --threads "$threads" | tee -a "$raw"
# the float32 roof of oneDNN, which runs the frozen float32 products in a build with it (fp32_gemm auto)
build/bench/vpdarts_bench --roof fp32 --threads "$threads" | grep "gemm=onednn" | tee -a "$raw" || true
isa=$(build/bench/vpdarts_bench --workload toy --mode infer --batch 1 --steps 1 2>&1 >/dev/null | sed -n 's/.*compiled for //p')

mkdir -p docs/results
python3 - "$raw" "$steps" "$threads" "$isa" "$infer_steps" <<'PY'
import platform, re, subprocess, sys
raw, steps, threads, isa, infer_steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ours, peer, roof, roof_portable, roof_bf16, roof_onednn = {}, {}, None, None, None, None
onednn_rows = set()  # the fp32 rows whose frozen products ran on oneDNN
busy_ours, busy_auto, busy_peer = {}, {}, {}
def parse_ours(line, into):
    f = dict(kv.split("=") for kv in line.split()[1:])
    key = (f["workload"], f["mode"], int(f["batch"]), f.get("precision", "fp32"))
    into.setdefault(key, []).append((float(f["sec_per_step"]), float(f["images_per_s"]), float(f["gflops_per_s"]),
                                     float(f["peak_rss_mb"])))
    if f.get("fp32_gemm") == "onednn":
        onednn_rows.add(key)
def parse_peer(line, into):
    c = [x.strip() for x in line.split("|", 1)[1].strip().strip("|").split("|")]
    name, prec = (c[0][:-5], "bf16") if c[0].endswith("-bf16") else (c[0], "fp32")
    key = (name, c[1], int(c[2]), prec)
    into.setdefault(key, []).append((float(c[4]), float(c[5]), float(c[7]), float(c[8])))
for line in open(raw):
    if line.startswith("RESULT "):
        parse_ours(line, ours)
    elif line.startswith("BUSY RESULT "):
        parse_ours(line[5:], busy_ours)
    elif line.startswith("BUSY_AUTO RESULT "):
        parse_ours(line[10:], busy_auto)
    elif line.startswith("PEER |"):
        parse_peer(line, peer)
    elif line.startswith("BUSY_PEER |"):
        parse_peer(line, busy_peer)
    elif line.startswith("ROOF precision=bf16"):
        roof_bf16 = float(re.search(r"gflops_per_s=([0-9.]+)", line).group(1))
    elif line.startswith("ROOF precision=fp32"):
        roof_onednn = float(re.search(r"gflops_per_s=([0-9.]+)", line).group(1))
    elif line.startswith("ROOF "):
        roof = float(re.search(r"([0-9.]+) GFLOP/s", line).group(1))
    elif line.startswith("ROOF_PORTABLE "):
        roof_portable = float(re.search(r"([0-9.]+) GFLOP/s", line).group(1))
best = lambda runs: min(runs, key=lambda r: r[0])        # the faster round of each side
cpu = "unknown"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
targets = {("toy", "first", "fp32"): 1.5, ("toy", "second", "fp32"): 1.5, ("tiny16", "first", "fp32"): 1.2,
           ("base16", "first", "fp32"): 3.0, ("toy", "first", "bf16"): 1.5, ("base16", "first", "bf16"): 1.5}
lines = ["# Performance: vpdarts against the PyTorch peer", "",
         f"Measured side by side by `scripts/bench.sh` (each side run in turn, A B A B; the faster round of each "
         f"is shown), {steps} timed steps ({infer_steps} for inference) after 2 warm-up steps, median, {threads} threads. "
         f"Machine: {cpu}, {platform.machine()}. The peer is `torch_search_bench.py` (PyTorch from Debian, OpenBLAS). "
         "FLOPs are the peer's analytic count (matmuls only; frozen weights get no gradient).", "",
         f"vpdarts ran its {isa} build: the benchmark, like the `vpdarts` tool, is built three times (portable "
         "x86-64, x86-64-v3 with AVX2 + FMA, x86-64-v4 with AVX-512) and re-executes the fastest one the CPU runs "
         "(`VPDARTS_DISPATCH=v3` stops at x86-64-v3, `=off` keeps the portable one).", "",
         f"Eigen SGEMM roof on this machine ({threads} threads): "
         + (f"{roof:.1f} GFLOP/s in the {isa} build" if roof else "not measured")
         + (f", {roof_portable:.1f} GFLOP/s in the portable x86-64 build." if roof_portable else ".")
         + (f" oneDNN's float32 matmul roof (2048 cube): {roof_onednn:.1f} GFLOP/s; the fp32 rows marked "
            "(oneDNN) ran their frozen products on it (`--fp32-gemm auto`, docs/precision.md) and their \"of roof\" is "
            "over it." if roof_onednn and onednn_rows else "")
         + (f" oneDNN's bf16 matmul roof (2048 cube): {roof_bf16:.1f} GFLOP/s." if roof_bf16 else
            " bf16: not available on this CPU (no AVX512-BF16 or AMX), not measured."),
         "", "Precision fp32 is float32 on both sides; bf16 is vpdarts `--precision bf16` (the frozen products in bf16 "
         "through oneDNN, docs/precision.md) against the peer's `--dtype bf16` (`torch.autocast(\"cpu\", torch.bfloat16)`). "
         "\"of roof\" is vpdarts's GFLOP/s over the roof of its precision (the build it ran for fp32). \"RSS ratio\" "
         "is vpdarts's peak RSS over the peer's of the same precision.", "",
         "| workload | mode | batch | precision | vpdarts s/step | peer s/step | vpdarts images/s | peer images/s | ratio | "
         "target | vpdarts GFLOP/s | of roof | vpdarts peak RSS MiB | peer peak RSS MiB | RSS ratio |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for key in sorted(ours, key=lambda k: (k[0], ["first", "second", "infer"].index(k[1]), k[2], k[3])):
    if key not in peer:
        continue
    o, p = best(ours[key]), best(peer[key])
    ratio = p[0] / o[0]  # the same images per step on both sides; images/s is printed rounded (0.3 at base16)
    t = targets.get((key[0], key[1], key[3]))
    if key[1] == "infer" and key[3] == "fp32" and key[0] == "toy":
        t = 3.0 if key[2] == 1 else 1.5
    if key[1] == "infer" and key[3] == "bf16" and key[2] == 64 and key[0] in ("toy", "base16"):
        t = 1.5
    r = roof_bf16 if key[3] == "bf16" else (roof_onednn if key in onednn_rows and roof_onednn else roof)
    mark = "-" if t is None else (f">= {t}x {'met' if ratio >= t else 'NOT met'}")
    rss = o[3] / p[3]
    rss_mark = f"{rss:.2f}" + (" (<= 0.5 met)" if rss <= 0.5 else " (<= 0.5 NOT met)")
    prec = key[3] + (" (oneDNN)" if key in onednn_rows else "")
    lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {prec} | {o[0]:.4f} | {p[0]:.4f} | {o[1]:.1f} | {p[1]:.1f} | "
                 f"{ratio:.2f}x | {mark} | {o[2]:.1f} | " + (f"{o[2] / r * 100:.0f}%" if r else "-") +
                 f" | {o[3]:.0f} | {p[3]:.0f} | {rss_mark} |")
busy_rows = [k for k in sorted(busy_ours) if k in busy_peer and k in busy_auto and k in ours and k in peer]
if busy_rows:
    lines += ["", "## Beside a busy loop", "",
              "The same steps again while a plain busy loop (one process spinning, started and stopped by the script) "
              "holds one of the two cores; slowdown is the busy s/step over the quiet s/step of the same side, both "
              f"from this run. vpdarts runs twice: with {threads} threads as in the quiet rows, and with the tool's "
              "default thread count (`--threads 0`: the cores other work leaves free, measured at start). Losing one "
              "of two cores should cost at most 2x (target: at most 2.2x, with the default threads).", "",
              f"| workload | mode | batch | precision | vpdarts quiet s | busy s, {threads} threads | slowdown | "
              "busy s, default threads | slowdown | target | peer quiet s | peer busy s | peer slowdown | "
              "busy ratio (vpdarts default over the peer, images/s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in busy_rows:
        oq, ob, oa = best(ours[key]), best(busy_ours[key]), best(busy_auto[key])
        pq, pb = best(peer[key]), best(busy_peer[key])
        slow = oa[0] / oq[0]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {oq[0]:.4f} | {ob[0]:.4f} | {ob[0] / oq[0]:.2f}x | "
                     f"{oa[0]:.4f} | {slow:.2f}x | <= 2.2x {'met' if slow <= 2.2 else 'NOT met'} | {pq[0]:.4f} | "
                     f"{pb[0]:.4f} | {pb[0] / pq[0]:.2f}x | {oa[1] / pb[1]:.2f}x |")
lines += ["", "Reproduce: `scripts/bench.sh` (it installs `python3-torch` and `libopenblas0-pthread`, builds "
          "`build/bench/vpdarts_bench` and runs both sides). One configuration by hand:", "",
          "    build/bench/vpdarts_bench --workload toy --mode first --steps 3 --threads 2",
          "    /usr/bin/python3 ../shared/peers/torch_search_bench.py --workload toy --mode first --steps 3 --threads 2",
          "    build/bench/vpdarts_bench --workload toy --mode first --steps 3 --threads 2 --precision bf16",
          "    /usr/bin/python3 ../shared/peers/torch_search_bench.py --workload toy --mode first --steps 3 --threads 2 --dtype bf16",
          ""]
marker = "<!-- hand-written below -->"
try:
    old = open("docs/results/performance.md").read()
    if marker in old:
        lines += [marker + old.split(marker, 1)[1].rstrip("\n"), ""]
except OSError:
    pass
open("docs/results/performance.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
