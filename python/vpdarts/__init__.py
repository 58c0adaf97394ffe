"""vpdarts from Python: visual prompt tuning with differentiable fusion search, on the CPU.

    import vpdarts
    backbone = vpdarts.load_backbone("vit_small.safetensors", arch="vit_small_patch14_dinov2", image=112)
    train = vpdarts.load_data(backbone, data="fashion", classes="5-9", train_images=1000)
    found = vpdarts.search(backbone, train, out="run", epochs=10)          # genotype, alpha, metrics
    result = vpdarts.retrain(backbone, train, genotype=found["genotype"], out="run/retrain")
    model = vpdarts.load_model(result["model"])
    logits = model.predict(images)                                          # (N, C, H, W) float32
    model.export_torch("exported")                                          # a PyTorch nn.Module

Every option is the vpdarts tool's flag of the same name, with '_' for '-' (w_lr is --w-lr; True sets a
switch, False clears it, a list is a comma list), checked by the tool's own code: a bad value raises
ValueError with the tool's message, a file problem OSError. The files written are the tool's, so the
command line and Python share runs. vpdarts computes without the GIL; Ctrl-C stops a search or a
retraining at its next step (a search keeps the checkpoint of its last whole epoch: resume=True
continues it). See docs/python.md.
"""

import json as _json
import os as _os
from collections import namedtuple as _namedtuple

import numpy as _np


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _native_part():
    """The fastest build of the native part this CPU runs: x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) or
    the portable one. VPDARTS_DISPATCH=off keeps the portable one and =v3 goes no higher, as for the tool."""
    import importlib

    choice = _os.environ.get("VPDARTS_DISPATCH", "")
    flags = _cpu_flags()
    v3 = {"avx", "avx2", "bmi1", "bmi2", "fma"} <= flags
    v4 = v3 and {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    names = []
    if choice != "off":
        names += ["_vpdarts_x86_64_v4"] if v4 and choice != "v3" else []
        names += ["_vpdarts_x86_64_v3"] if v3 else []
    for name in names:
        try:
            return importlib.import_module("." + name, __name__)
        except ImportError:
            pass
    return importlib.import_module("._vpdarts", __name__)


_vpdarts = _native_part()

Backbone = _vpdarts.Backbone
Model = _vpdarts.Model

Dataset = _namedtuple("Dataset", ["images", "labels", "class_names", "normalization"])
Dataset.__doc__ = """Labelled images as vpdarts takes them: images (N, C, H, W) float32 (normalised) or uint8,
labels (N,) integers in [0, len(class_names)), and normalization (mean, std), what turns pixels in
[0, 1] into the images (a model file records it; uint8 images are normalised with it)."""

_NORMALIZATIONS = {"imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), "synthetic": ([0.5], [0.25]),
                   "fashion": ([0.2860], [0.3530])}


def _flag_value(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, _os.PathLike):
        value = _os.fspath(value)
    elif isinstance(value, float):
        value = repr(value)
    return f"--{name}={value}"


def _args(options):
    """Keyword arguments as the tool's flags (None: the flag's default)."""
    out = []
    for key, value in options.items():
        if value is None:
            continue
        if key == "progress" or not key.isidentifier():
            raise TypeError(f"unexpected option {key!r}")
        out.append(_flag_value(key.replace("_", "-"), value))
    return out


def _normalization(value, channels=None):
    if value is None:
        return None
    if isinstance(value, str):
        if value not in _NORMALIZATIONS:
            raise ValueError(f"normalization {value!r} is not one of {sorted(_NORMALIZATIONS)} or a (mean, std) pair")
        return _NORMALIZATIONS[value]
    try:
        mean, std = value
        mean = [float(m) for m in _np.atleast_1d(mean)]
        std = [float(s) for s in _np.atleast_1d(std)]
    except (TypeError, ValueError):
        raise ValueError(f"normalization must be a name or a (mean, std) pair, got {value!r}") from None
    return mean, std


def _dataset(images, labels, class_names, normalization, who):
    if isinstance(images, Dataset):
        if labels is not None:
            raise TypeError(f"{who}: give a Dataset or images and labels, not both")
        d = images
        images, labels = d.images, d.labels
        class_names = d.class_names if class_names is None else class_names
        normalization = d.normalization if normalization is None else normalization
    if images is None or labels is None:
        raise TypeError(f"{who}: images and labels are needed (or a vpdarts.Dataset)")
    images = _np.asarray(images)
    labels = _np.asarray(labels)
    if class_names is None:
        top = 0
        if labels.size and labels.dtype.kind in "iu":
            if labels.min() < 0:
                i = int(_np.argmin(labels.reshape(-1)))
                raise ValueError(f"{who} labels: label {labels.reshape(-1)[i]} of image {i} is negative (labels are 0, 1, ...)")
            top = int(labels.max()) + 1
        class_names = [str(k) for k in range(top)]
    return images, labels, [str(c) for c in class_names], _normalization(normalization)


def load_backbone(path=None, **options):
    """A frozen ViT backbone from a timm-named safetensors file (None: the built-in one, pretrained on first
    use and cached in cache_dir, default $VPDARTS_CACHE or ~/.cache/vpdarts). Options as the tool's loading
    flags: arch, image, heads, norm_eps, act, pool, ignore_unknown_tensors, cache_dir, quiet."""
    args = _args(options)
    if path is not None:
        args.insert(0, _flag_value("backbone", path))
    return _vpdarts.load_backbone(args)


def load_data(backbone, test=False, **options):
    """The training (or with test=True, the test) images the tool's data flags describe, at the backbone's
    image size: data ("synthetic", "folder", "list", "idx", "fashion"), train / test (paths), classes,
    train_images, test_images, per_class, skip_bad, data_seed, noise. Returns a Dataset."""
    images, labels, names, norm = _vpdarts.load_data(backbone, bool(test), _args(options))
    return Dataset(images, labels, names, norm)


def _processes(mpi):
    if mpi is not None and not isinstance(mpi, bool):
        raise TypeError("mpi is None (MPI_COMM_WORLD when started by mpirun), True or False")
    return _vpdarts.set_mpi(mpi)


def search(backbone, images, labels=None, *, class_names=None, normalization=None, progress=None, mpi=None, **options):
    """The DARTS search of one fusion operator per layer on `images` (N, C, H, W) and `labels` (or a
    Dataset), with the tool's search flags as options (out, epochs, runs, seed, w_lr, order, resume,
    threads, precision, quiet, ...). progress: None shows the tool's progress bar, False nothing, a
    callable is called after every epoch with a dict (seed, epoch, epochs, alpha, train_loss, val_loss).
    mpi: None shares every batch over the processes of MPI_COMM_WORLD when Python was started by mpirun
    (`mpirun -np N python3 script.py`), as the tool does; False runs this process alone.
    Returns a dict: genotype (the genotype.json object: its "layers" name one operator per layer),
    alpha (softmax(alpha), layers x operators), metrics (metrics.json) and out (the folder written)."""
    _processes(mpi)
    images, labels, names, norm = _dataset(images, labels, class_names, normalization, "search")
    args = _args(options)
    if progress is False:
        args.append("--quiet")
        progress = None
    elif progress is not None and not callable(progress):
        raise TypeError("progress must be None, False or a callable")
    return _vpdarts.search(backbone, images, labels, names, norm, args, progress)


def retrain(backbone, images, labels=None, *, test_images=None, test_labels=None, test=None, genotype=None,
            class_names=None, normalization=None, progress=None, mpi=None, **options):
    """Trains the derived model of `genotype` (a search's result["genotype"], a genotype.json path, or a
    list of operator names, one per layer), or with op="add" one operator everywhere, or with
    linear_probe=True a linear head, on the images (or a Dataset); tests it on test_images/test_labels
    (or test=Dataset) when given. Options: the tool's retrain flags (out, epochs, lr, lr_grid, prompts,
    seed, threads, ...); progress=False shows no progress bar. Writes out/model.safetensors and
    out/metrics.json; returns a dict with metrics, model (the model file's path) and out. mpi: as search's."""
    _processes(mpi)
    if progress is False:
        options["quiet"] = True
    elif progress is not None:
        raise TypeError("retrain: progress is None (the progress bar) or False (none); per-epoch callbacks are search's")
    images, labels, names, norm = _dataset(images, labels, class_names, normalization, "retrain")
    if test is not None:
        if test_images is not None or test_labels is not None:
            raise TypeError("retrain: give test= or test_images/test_labels, not both")
        test_images, test_labels = test.images, test.labels
        if list(test.class_names) != names:
            raise ValueError(f"retrain: the test set's classes {list(test.class_names)} are not the training set's {names}")
    genotype_json = ""
    if isinstance(genotype, (str, _os.PathLike)):
        options["genotype"] = _os.fspath(genotype)
    elif isinstance(genotype, dict):
        genotype_json = _json.dumps(genotype)
    elif genotype is not None:
        genotype_json = _json.dumps({"layers": [{"op": str(op)} for op in genotype]})
    if test_images is not None:
        test_images = _np.asarray(test_images)
    if test_labels is not None:
        test_labels = _np.asarray(test_labels)
    return _vpdarts.retrain(backbone, images, labels, names, norm, test_images, test_labels, genotype_json, _args(options))


def load_model(path):
    """A model file written by retrain (or vpdarts retrain): a Model with predict(images, batch=64) -> logits,
    save(path), export_torch(folder), and its genotype, class_names, normalization and config."""
    return _vpdarts.load_model(_os.fspath(path))
