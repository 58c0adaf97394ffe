#!/usr/bin/env python3
"""Writes docs/results/fashion.md and one picture per task from the kept result files of
scripts/fashion_study.sh (RES/TASK/seedS/METHOD/metrics.json, genotype.json).
A piece not run yet shows as pending.   fashion_report.py RES "TASKS" "SEEDS"
"""
import json
import os
import statistics
import sys

res, tasks, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
folder = os.path.basename(res.rstrip("/"))  # the results folder's name: the page and its pictures are named after it
TASKS = {"a": ("0-4", "5-9"), "b": ("5-9", "0-4")}
SINGLES = [("concat (VPT-deep)", "op-concat"), ("add", "op-add"), ("affine", "op-affine"),
           ("cross_attention", "op-cross_attention")]
SEARCHED = [("search, argmax of alpha", "argmax"), ("search, perturbation", "perturbation"),
            ("search, best of seeds", "best"), ("search, the tool's default", "default")]
METHODS = [("linear probe", "probe")] + SINGLES + SEARCHED


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None


def mean_sd(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def span(xs):
    xs = sorted(set(xs))
    return f"{xs[0]:,}" if len(xs) == 1 else f"{xs[0]:,}-{xs[-1]:,}"


lines = ["# Fashion-MNIST transfer study", "",
         "A ViT (28x28x1, patch 4, D 192, depth 6, 3 heads, MLP 768, 8 prompts) pretrained on all training images of",
         "five Fashion-MNIST classes (3 epochs, AdamW, random crop from a 2-pixel padding), then adapted on 1000",
         "training images of the other five and tested on all their test images. Two tasks: **a** (0-4 to 5-9) and",
         "**b** (5-9 to 0-4). Seeds " + ", ".join(seeds) + ": the seed draws the 1000 images, initialises and shuffles.", "",
         "One protocol for every method (`vpdarts retrain --lr-grid`): trained on the 800 search-train images at each",
         "lr of the grid, scored on the 200 search-val images, then trained on all 1000 at the best lr and tested once.",
         "Test images are never used to choose anything. The searched genotypes:",
         "- *argmax*: softmax(alpha)'s strongest operator per layer (DARTS's rule);",
         "- *perturbation*: layer by layer, the operator whose removal from the trained supernet costs the most",
         "  search-val accuracy (Wang et al., ICLR 2021), with one epoch of w fine-tuning after each layer is fixed;",
         "- *best of seeds*: the argmax genotypes of the task's searches, each trained briefly on search-train and",
         "  scored on search-val (seed 0's split); the best one retrained under every seed (DARTS's protocol).", ""]
status = []
for task in tasks:
    src, dst = TASKS[task]
    lines += [f"## Task {task}: pretrain on classes {src}, transfer to {dst}", ""]
    lines += ["| method | test accuracy (mean ± sd) | per seed | trainable params | latency ms (b1) | images/s (b64) | lr chosen | train s |",
              "|---|---|---|---|---|---|---|---|"]
    results = {}
    for name, sub in METHODS:
        ms = {s: load(f"{res}/{task}/seed{s}/{sub}/metrics.json") for s in seeds}
        got = {s: m for s, m in ms.items() if m}
        if not got:
            lines.append(f"| {name} | pending | | | | | | |")
            continue
        acc = [got[s]["test_accuracy"] if s in got else None for s in seeds]
        done = [a for a in acc if a is not None]
        mean, sd = mean_sd(done)
        results[name] = {"acc": acc, "mean": mean, "params": [m["trainable_params"] for m in got.values()],
                         "n": len(done)}
        per = " / ".join("pending" if a is None else f"{a:.4f}" for a in acc)
        lrs = " / ".join(f"{got[s].get('lr', float('nan')):g}" if s in got else "-" for s in seeds)
        lines.append(f"| {name} | {mean:.4f} ± {sd:.4f}{'' if len(done) == len(seeds) else f' ({len(done)} of {len(seeds)})'} | "
                     f"{per} | {span(results[name]['params'])} | "
                     f"{statistics.mean(m['latency_ms_batch1'] for m in got.values()):.2f} | "
                     f"{statistics.mean(m['throughput_batch64'] for m in got.values()):.0f} | {lrs} | "
                     f"{statistics.mean(m['seconds'] for m in got.values()):.0f} |")
    lines.append("")
    singles = {n: r for n, r in results.items() if n in dict(SINGLES) and r["n"] == len(seeds)}
    if singles:
        best = max(singles, key=lambda n: singles[n]["mean"])
        lines.append(f"Best single operator on the mean: **{best}** ({singles[best]['mean']:.4f}, "
                     f"{span(singles[best]['params'])} trainable).")
        vpt = results.get("concat (VPT-deep)")
        for name, _ in SEARCHED:
            r = results.get(name)
            if not r or r["n"] < len(seeds):
                continue
            ok_acc = r["mean"] >= singles[best]["mean"]
            ok_params = max(r["params"]) <= min(singles[best]["params"])
            ok_vpt = vpt is not None and all(a > v for a, v in zip(r["acc"], vpt["acc"]) if a is not None and v is not None)
            lines.append(f"- {name}: {r['mean']:.4f} ({(r['mean'] - singles[best]['mean']) * 100:+.2f} points against "
                         f"{best}; {'at least' if ok_acc else 'below'} it), trainable {span(r['params'])} "
                         f"({'no more than' if ok_params else 'more than'} {best}'s), "
                         f"{'beats' if ok_vpt else 'does not beat'} VPT-deep on every seed.")
        lines.append("")
    # genotypes, margins and layer preferences
    lines += ["### Genotypes", ""]
    for label, sub in [("argmax", "search"), ("perturbation", "pert"), ("the tool's default", "default-search")]:
        for s in seeds:
            m = load(f"{res}/{task}/seed{s}/{sub}/metrics.json")
            if not m:
                continue
            margins = ", ".join(f"{x:.3f}" for x in m["margins"])
            extra = ""
            if sub == "pert" and m.get("selection", {}).get("differs_from_argmax"):
                extra = "; differs from argmax at " + "; ".join(m["selection"]["differs_from_argmax"])
            lines.append(f"- {label}, seed {s}: {', '.join(m['genotype'])} (alpha margins {margins}){extra}")
    b = load(f"{res}/{task}/best/metrics.json")
    if b:
        scores = "; ".join(f"{os.path.basename(os.path.dirname(c['run']))}: {c['val_accuracy']:.3f}" for c in b["candidates"])
        lines.append(f"- best of seeds: {', '.join(b['genotype'])} (search-val accuracy after {b['epochs']} epochs: {scores})")
    lines.append("")
    prefs = {}
    for s in seeds:
        for sub in ("search", "pert"):
            m = load(f"{res}/{task}/seed{s}/{sub}/metrics.json")
            if m:
                for layer, op in enumerate(m["genotype"]):
                    prefs.setdefault(sub, {}).setdefault(layer, []).append(op)
    if prefs:
        lines += ["Operators chosen per layer across seeds:", "", "| layer | argmax | perturbation |", "|---|---|---|"]
        depth = max(len(v) for v in prefs.values())
        fmt = lambda ops: ", ".join(f"{op} ×{ops.count(op)}" for op in sorted(set(ops), key=lambda o: (-ops.count(o), o)))
        for layer in range(depth):
            lines.append(f"| {layer} | {fmt(prefs.get('search', {}).get(layer, []))} | {fmt(prefs.get('pert', {}).get(layer, []))} |")
        lines.append("")
    # the picture: accuracy against trainable parameters
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        for i, (name, r) in enumerate(results.items()):
            pts = [(p, a) for p, a in zip(r["params"], [a for a in r["acc"] if a is not None])]
            color = f"C{i}"
            ax.scatter([p for p, _ in pts], [a for _, a in pts], color=color, alpha=0.45, s=18)
            ax.scatter([statistics.mean(r["params"])], [r["mean"]], color=color, marker="D", s=50, label=name,
                       edgecolors="black")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"Task {task}: classes {src} to {dst} (dots: seeds, diamonds: means)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        os.makedirs(f"{res}", exist_ok=True)
        fig.savefig(f"{res}/accuracy_vs_params_{task}.png")
        plt.close(fig)
        lines += [f"![task {task}: accuracy against trainable parameters]({folder}/accuracy_vs_params_{task}.png)", ""]
    except ImportError:
        status.append("matplotlib is missing (python3-matplotlib): no picture")
lines += ["## Reproduce", "", "    scripts/fashion_study.sh            # continues where it stopped",
          "    REPORT_ONLY=1 scripts/fashion_study.sh   # this page again from the kept results",
          "    TOOL_DEFAULT=1 scripts/fashion_study.sh  # adds the tool's default search (three runs per seed)",
          "    TOOL_DEFAULT=1 PRECISION=fp32 scripts/fashion_study.sh  # how this page's results were made", "",
          f"Each task's backbone is fingerprinted in `docs/results/{folder}/TASK/backbone.json`; kept results are",
          "continued only on the backbone they were made with.", "",
          f"Per-run result files: `docs/results/{folder}/TASK/seedS/METHOD/`."]
# the page beside the results folder, named after it (docs/results/fashion -> docs/results/fashion.md)
path = os.path.join(os.path.dirname(res.rstrip("/")), folder + ".md")
hand = ""
if os.path.exists(path):
    old = open(path).read()
    marker = "<!-- hand-written below -->"
    if marker in old:
        hand = "\n" + old[old.index(marker):]
tmp = path + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n" + hand)
os.replace(tmp, path)
for s in status:
    print("fashion_report:", s)
print(f"fashion_report: wrote {path}")
