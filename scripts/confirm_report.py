#!/usr/bin/env python3
"""Writes docs/results/confirm.md and one front picture per task from the kept result files of
scripts/confirm_study.sh (RES/TASK/nN/seedS/METHOD/metrics.json). A piece not run yet shows as pending.
    confirm_report.py RES "TASKS" "SIZES" "SEEDS"
"""
import json
import os
import statistics
import sys

res, tasks, sizes, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
folder = os.path.basename(res.rstrip("/"))
TASKS = {"c": ("0,2,4,6,8", "1,3,5,7,9"), "d": ("1,3,5,7,9", "0,2,4,6,8"),
         "e": ("0,1,4,5,8", "2,3,6,7,9"), "f": ("2,3,6,7,9", "0,1,4,5,8")}
# which rule the folder's default ran: the first (confirm) or the revised one (confirm2), docs/method.md
REVISED = folder == "confirm2"
SINGLES = ["op-concat", "op-add", "op-affine", "op-cross_attention"]
NAMES = {"probe": "linear probe", "op-concat": "concat (VPT-deep)", "op-add": "add", "op-affine": "affine",
         "op-cross_attention": "cross_attention", "default": "search, the default rule",
         "cv": "search, chosen by 5-fold cross-validation", "budget": "search, 25 % of add's values"}
# the revised rule already chooses by cross-validation below 1000 images: no separate cv method there
METHODS = ["probe"] + SINGLES + (["default", "budget"] if REVISED else ["default", "cv", "budget"])


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(x):
    return f"{100 * x:.2f}"


intro = (["# Confirmation study of the revised default rule, on tasks it was not chosen on", "",
          "The revised default rule (more epochs and cross-validated selection below 1000 training images) was frozen",
          "on 2026-12-07 at 22:27 UTC (docs/method.md, \"The revised default rule\") after looking at tasks c and d",
          "([confirm.md](confirm.md)) and before any of these runs. From 1000 images on it is the first rule exactly."]
         if REVISED else
         ["# Confirmation study: the default rule on tasks it was not chosen on", "",
          "The tool's default search rule was frozen on 2026-12-07 (docs/method.md, \"The default rule\") before",
          "any of these runs; the revised rule that followed is confirmed in [confirm2.md](confirm2.md)."])
lines = intro + ["Fashion-MNIST, a ViT (28x28x1, patch 4, D 192, depth 6, 3 heads, MLP 768) pretrained",
         "on five classes per task, adapted on N training images of the other five, tested on all their test images.",
         "Every method gets one protocol (`vpdarts retrain --lr-grid 0.005,0.01,0.05,0.25,1.0 --wd-grid 0,1e-4,1e-3`,",
         "widened past an edge; VPT-deep also over 1, 8 and 50 prompts): trained on search-train at each value,",
         "scored on search-val, retrained on all N at the best and tested once. `scripts/confirm_study.sh` runs it;",
         "`REPORT_ONLY=1 scripts/confirm_study.sh` rewrites this page. Accuracies in %.", ""]
# what was changed in the protocol, and why: the folder's hand-written notes, shown as they are
notes = f"{res}/NOTES.md"
if os.path.exists(notes):
    with open(notes) as f:
        lines += [f.read().rstrip(), ""]
pending = []
for task in tasks:
    src, dst = TASKS.get(task, ("?", "?"))
    lines += [f"## Task {task}: pretrain on classes {src}, transfer to {dst}", ""]
    for n in sizes:
        lines += [f"### {n} training images", ""]
        lines += ["| method | test accuracy, mean (per seed) | trainable values | lr, weight decay (prompts) chosen | edges left | seconds |",
                  "|---|---|---|---|---|---|"]
        got = {}
        for m in METHODS:
            ms = {s: load(f"{res}/{task}/n{n}/seed{s}/{m}/metrics.json") for s in seeds}
            done = {s: x for s, x in ms.items() if x and x.get("test_accuracy") is not None}
            for s in seeds:
                if s not in done:
                    pending.append(f"{task}/n{n}/seed{s}/{m}")
            if not done:
                lines.append(f"| {NAMES[m]} | pending | | | | |")
                continue
            got[m] = done
            accs = [done[s]["test_accuracy"] for s in seeds if s in done]
            per = ", ".join(pct(done[s]["test_accuracy"]) if s in done else "-" for s in seeds)
            chosen = "; ".join(f"{done[s].get('lr')}, {done[s].get('weight_decay')}" +
                               (f" ({done[s].get('prompts')})" if m == "op-concat" else "") for s in seeds if s in done)
            edges = sum(len((done[s].get("lr_grid") or {}).get("at_edge", [])) for s in done)
            secs = [done[s].get("seconds", 0) for s in done]
            params = sorted({done[s]["trainable_params"] for s in done})
            lines.append(f"| {NAMES[m]} | {pct(statistics.mean(accs))} ({per}) | {params[0]:,}" +
                         (f"-{params[-1]:,}" if len(params) > 1 else "") +
                         f" | {chosen} | {edges} | {statistics.mean(secs):.0f} |")
        lines.append("")
        # the targets, per seed
        rows = []
        for s in seeds:
            d = got.get("default", {}).get(s)
            singles = {m: got[m][s]["test_accuracy"] for m in SINGLES if m in got and s in got[m]}
            if not d or len(singles) < len(SINGLES) or "op-add" not in singles:
                continue
            search = load(f"{res}/{task}/n{n}/seed{s}/default-search/metrics.json") or {}
            retrain_all = sum(got[m][s].get("seconds", 0) for m in SINGLES)
            best_single = max(singles, key=singles.get)
            rows.append((s, d["test_accuracy"] - singles["op-add"], d["test_accuracy"] - singles[best_single],
                         best_single, search.get("seconds", float("nan")), retrain_all))
        if rows:
            lines += ["| seed | default - add | default - best single operator | search s | retraining every single operator s |",
                      "|---|---|---|---|---|"]
            for s, da, db, best, ss, rs in rows:
                lines.append(f"| {s} | {pct(da)} | {pct(db)} ({NAMES[best]}) | {ss:.0f} | {rs:.0f} |")
            lines.append("")
            if len(rows) == len(seeds):
                best_mean = max(statistics.mean(got[m][s]["test_accuracy"] for s in seeds) for m in SINGLES)
                worst = min(got["default"][s]["test_accuracy"] for s in seeds)
                lines.append(f"Worst seed of the default: {pct(worst)}; best single operator's mean: {pct(best_mean)}; "
                             f"target (within 1 point): {'met' if worst >= best_mean - 0.01 else 'NOT met'}.")
            if "budget" in got and "op-add" in got and all(s in got["budget"] and s in got["op-add"] for s in seeds):
                b = statistics.mean(got["budget"][s]["test_accuracy"] for s in seeds)
                a = statistics.mean(got["op-add"][s]["test_accuracy"] for s in seeds)
                share = statistics.mean(got["budget"][s]["trainable_params"] / got["op-add"][s]["trainable_params"] for s in seeds)
                lines.append(f"The budgeted search: {pct(b)} at {100 * share:.0f} % of add's values, add {pct(a)}; "
                             f"target (within 1 point at <= 25 %): {'met' if b >= a - 0.01 and share <= 0.25 + 1e-9 else 'NOT met'}.")
            if "probe" in got and "op-concat" in got and all(s in got["probe"] and s in got["op-concat"] for s in seeds):
                v = statistics.mean(got["op-concat"][s]["test_accuracy"] for s in seeds)
                p = statistics.mean(got["probe"][s]["test_accuracy"] for s in seeds)
                lines.append(f"VPT-deep {pct(v)} against the linear probe {pct(p)}: "
                             f"{'at least as accurate' if v >= p else 'below the probe'}.")
            lines.append("")
    # the front: every method's accuracy against its trainable values, per size
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
        drawn = False
        for ax, n in zip(axes[0], sizes):
            for i, m in enumerate(METHODS):
                xs, ys = [], []
                for s in seeds:
                    x = load(f"{res}/{task}/n{n}/seed{s}/{m}/metrics.json")
                    if x and x.get("test_accuracy") is not None:
                        xs.append(x["trainable_params"])
                        ys.append(100 * x["test_accuracy"])
                if xs:
                    drawn = True
                    # each method its own colour and marker, the same in every panel
                    ax.scatter(xs, ys, label=NAMES[m], marker="os^vDP*"[i % 7], color=f"C{i % 10}")
            fx, fy = [], []
            for i in range(64):
                x = load(f"{res}/{task}/n{n}/seed0/front-{i}/metrics.json")
                if not x or x.get("test_accuracy") is None:
                    break
                fx.append(x["trainable_params"])
                fy.append(100 * x["test_accuracy"])
            if fx:
                drawn = True
                order = sorted(range(len(fx)), key=lambda j: fx[j])
                ax.plot([fx[j] for j in order], [fy[j] for j in order], "k--", marker=".",
                        label="searches within budgets (seed 0)")
            ax.set_xscale("log")
            ax.set_title(f"task {task}, {n} images")
            ax.set_xlabel("trainable values")
            ax.set_ylabel("test accuracy, %")
        if drawn:
            # the legend on the first panel with something drawn (a size still pending draws nothing)
            next(ax for ax in axes[0] if ax.get_legend_handles_labels()[0]).legend(fontsize=7)
            fig.tight_layout()
            pic = f"{os.path.dirname(res.rstrip('/')) or '.'}/{folder}_front_{task}.png"
            fig.savefig(pic + ".tmp.png", dpi=90)
            os.replace(pic + ".tmp.png", pic)
            lines += [f"![task {task}: accuracy against trainable values]({os.path.basename(pic)})", ""]
        plt.close(fig)
    except ImportError:
        lines += ["(matplotlib is missing: no picture)", ""]
if pending:
    lines += ["## Pending", "", f"{len(pending)} pieces not run yet: " + ", ".join(pending[:12]) +
              (", ..." if len(pending) > 12 else ""), ""]
page = f"{os.path.dirname(res.rstrip('/')) or '.'}/{folder}.md"
with open(page + ".tmp", "w") as f:
    f.write("\n".join(lines))
os.replace(page + ".tmp", page)
print(f"wrote {page}")
