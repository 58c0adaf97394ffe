#!/usr/bin/python3
"""A PyTorch reference for `vpdarts retrain --op NAME` on the Fashion-MNIST transfer task.

It trains one fusion operator at every layer of a frozen backbone written by `vpdarts pretrain`
(a timm-named safetensors file), with the recipe of `vpdarts retrain`: SGD momentum 0.9, weight decay
1e-4 on every trainable value but the head's bias, gradient-norm clip 5, one epoch of linear lr warm-up
then cosine decay to 0, batch 32, a zero head. The model is the PyTorch peer's
(`torch_search_bench.py`: its ViT, its operators, its derived model). The training images are a
class-balanced random draw of the source file's training images of --classes (its own RNG, so not the
images vpdarts draws), the test images all test images of those classes.

Used to check that vpdarts and PyTorch train the same recipe to the same accuracy (issue 14, section 2):
run both over several seeds and compare the spread.

  /usr/bin/python3 scripts/torch_retrain.py --backbone B.safetensors --op affine --classes 5-9 --seed 0 \
      [--lr 0.05] [--epochs 10] [--train-images 1000] [--drop-last] [--peer ../shared/peers/torch_search_bench.py]

Prints one JSON line: op, seed, lr, test accuracy, final training loss, steps, seconds.
"""
import argparse
import gzip
import importlib.util
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_peer(path):
    spec = importlib.util.spec_from_file_location("torch_search_bench", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["torch_search_bench"] = mod  # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F64": np.float64, "F16": np.float16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"]).copy()).float()
    return out, header.get("__metadata__", {})


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def parse_classes(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(c) for c in text.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--op", required=True, choices=["concat", "add", "affine", "cross_attention"])
    ap.add_argument("--classes", default="5-9")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=1000)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--drop-last", action="store_true", help="drop each epoch's last partial batch, as vpdarts does")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--peer", default="../shared/peers/torch_search_bench.py")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    peer = load_peer(a.peer)

    weights, _ = read_safetensors(a.backbone)
    dim = weights["cls_token"].shape[-1]
    patch = weights["patch_embed.proj.weight"].shape[-1]
    channels = weights["patch_embed.proj.weight"].shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    mlp = weights["blocks.0.mlp.fc1.weight"].shape[0]
    tokens = weights["pos_embed"].shape[1]
    image = int(round(math.sqrt(tokens - 1))) * patch
    classes = parse_classes(a.classes)
    cfg = peer.Config("fashion", image=image, channels=channels, patch=patch, dim=dim, depth=depth,
                      heads=a.heads, mlp=mlp, prompts=a.prompts, classes=len(classes), batch=a.batch)
    model = peer.derived_model(cfg, [a.op] * depth)
    missing = model.backbone.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")},
                                             strict=True)
    del missing

    def images(split):
        x = read_idx(f"{a.data}/{split}-images-idx3-ubyte.gz")
        y = read_idx(f"{a.data}/{split}-labels-idx1-ubyte.gz")
        return x, y

    def to_tensor(x):  # (n, 28, 28) bytes -> (n, 1, 28, 28), Fashion-MNIST's mean and std
        return (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1) - 0.2860) / 0.3530

    xtr, ytr = images("train")
    per = a.train_images // len(classes)
    pick = np.concatenate([rng.permutation(np.flatnonzero(ytr == c))[:per] for c in classes])
    x_train, y_train = to_tensor(xtr[pick]), torch.tensor([classes.index(c) for c in ytr[pick]])
    xte, yte = images("t10k")
    keep = np.isin(yte, classes)
    x_test, y_test = to_tensor(xte[keep]), torch.tensor([classes.index(c) for c in yte[keep]])

    n = len(y_train)
    steps_per_epoch = n // a.batch if a.drop_last else math.ceil(n / a.batch)
    total = steps_per_epoch * a.epochs
    warmup = steps_per_epoch  # one epoch, as vpdarts retrain's --lr-warmup-epochs 1
    decay = [p for name, p in model.named_parameters() if p.requires_grad and name != "head.bias"]
    no_decay = [model.head.bias]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=a.lr, momentum=0.9)
    trainable = decay + no_decay
    start = time.time()
    step, last_losses = 0, []
    for epoch in range(a.epochs):
        order = torch.from_numpy(rng.permutation(n))
        for b in range(steps_per_epoch):
            idx = order[b * a.batch:(b + 1) * a.batch]
            if step < warmup:
                lr = a.lr * (step + 1) / warmup
            else:
                t = min(1.0, (step - warmup) / max(1, total - warmup))
                lr = 0.5 * a.lr * (1 + math.cos(math.pi * t))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            opt.step()
            step += 1
            if epoch == a.epochs - 1:
                last_losses.append(loss.item())
    correct = 0
    with torch.no_grad():
        for b in range(0, len(y_test), 256):
            correct += (model(x_test[b:b + 256]).argmax(-1) == y_test[b:b + 256]).sum().item()
    print(json.dumps({"op": a.op, "seed": a.seed, "lr": a.lr, "drop_last": a.drop_last,
                      "test_accuracy": correct / len(y_test), "final_epoch_loss": float(np.mean(last_losses)),
                      "steps": total, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
