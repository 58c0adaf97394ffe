"""The Python module (import vpdarts) and the PyTorch export, run by ctest (python/CMakeLists.txt) with
PYTHONPATH at the build tree's package, VPDARTS_TOOL the vpdarts program and VPDARTS_FIXTURES the
test fixtures. Small models on timm-named fixture backbones: the whole file runs in about a minute."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import tempfile

import numpy as np
import pytest

# never the user's home or cache: an empty home and vpdarts cache of this run's own (a backbone left
# out of load_backbone would be pretrained and cached there, not in ~/.cache)
HOME = Path(tempfile.mkdtemp(prefix="vpdarts-python-home-"))
os.environ.update(HOME=str(HOME), XDG_CACHE_HOME=str(HOME / ".cache"), VPDARTS_CACHE=str(HOME / "vpdarts-cache"))

import vpdarts  # noqa: E402

FIXTURES = Path(os.environ["VPDARTS_FIXTURES"])
TOOL = os.environ["VPDARTS_TOOL"]
PLAIN = FIXTURES / "timm" / "plain" / "backbone.safetensors"
# every option that sets what a search computes, as the tool's flags and as Python options
SEARCH = dict(runs=1, epochs=3, warmup_epochs=1, batch=8, seed=5, threads=1, quiet=True)
DATA = dict(train_images=48, classes="0-2")


def flags(options):
    out = []
    for k, v in options.items():
        name = "--" + k.replace("_", "-")
        out += [name] if v is True else [name, str(v)]
    return out


def tool(*args):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def backbone():
    return vpdarts.load_backbone(PLAIN, image=32, heads=2, quiet=True)


@pytest.fixture(scope="module")
def train(backbone):
    return vpdarts.load_data(backbone, **DATA)


def test_backbone_and_data(backbone, train):
    c = backbone.config
    assert (c["image"], c["channels"], c["depth"], c["dim"]) == (32, 3, 3, 64)
    assert train.images.shape == (48, 3, 32, 32) and train.images.dtype == np.float32
    assert train.labels.shape == (48,) and set(train.labels.tolist()) == {0, 1, 2}
    assert len(train.class_names) == 3


def same_metrics(a, b):
    """The parts of two metrics.json that do not depend on time or on the machine's load."""
    timed = {"seconds", "search_seconds", "latency_ms_batch1", "latency_ms_batch1_p10", "latency_ms_batch1_p90",
             "throughput_batch64", "peak_rss_mb", "threads"}

    def untimed(m):
        out = {k: v for k, v in m.items() if k not in timed}
        if "cost" in out:  # the latency table is timed too
            out["cost"] = {k: v for k, v in out["cost"].items() if "latency_ms" not in k}
        return out
    return untimed(a) == untimed(b)


def test_search_and_retrain_as_the_tool(backbone, train, tmp_path):
    found = vpdarts.search(backbone, train, out=tmp_path / "py", **SEARCH)
    tool("search", "--backbone", PLAIN, "--image", 32, "--heads", 2, "--out", tmp_path / "cli", *flags(SEARCH), *flags(DATA))
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert found["genotype"] == json.loads((tmp_path / "cli" / "genotype.json").read_text())
    assert same_metrics(found["metrics"], cli_metrics)
    assert found["metrics"] == json.loads((tmp_path / "py" / "metrics.json").read_text())
    # load_data's arrays view the dataset vpdarts holds (no copy); copies of them give the same search
    assert not train.images.flags.owndata and not train.labels.flags.owndata
    copied = vpdarts.search(backbone, train.images.copy(), train.labels.astype(np.int64), class_names=train.class_names,
                            normalization=train.normalization, out=tmp_path / "copied", **SEARCH)
    assert copied["genotype"] == found["genotype"]
    np.testing.assert_array_equal(copied["alpha"], found["alpha"])
    layers = [l["op"] for l in found["genotype"]["layers"]]
    assert len(layers) == 3 and found["alpha"].shape == (3, 4)
    np.testing.assert_allclose(found["alpha"].sum(axis=1), 1, rtol=1e-12)

    test = vpdarts.load_data(backbone, test=True, test_images=30, classes="0-2")
    opts = dict(epochs=2, batch=8, seed=3, threads=1, quiet=True)
    r = vpdarts.retrain(backbone, train, test=test, genotype=found["genotype"], out=tmp_path / "py-rt", **opts)
    tool("retrain", "--backbone", PLAIN, "--image", 32, "--heads", 2, "--genotype", tmp_path / "cli" / "genotype.json",
         "--out", tmp_path / "cli-rt", "--test-images", 30, *flags(opts), *flags(DATA))
    assert same_metrics(r["metrics"], json.loads((tmp_path / "cli-rt" / "metrics.json").read_text()))
    assert 0 <= r["metrics"]["test_accuracy"] <= 1

    mine, theirs = vpdarts.load_model(r["model"]), vpdarts.load_model(tmp_path / "cli-rt" / "model.safetensors")
    assert mine.genotype == theirs.genotype and mine.class_names == theirs.class_names == train.class_names
    assert mine.normalization == theirs.normalization
    np.testing.assert_array_equal(mine.predict(test.images), theirs.predict(test.images))
    logits = mine.predict(test.images, batch=7)  # chunked alike
    np.testing.assert_allclose(logits, mine.predict(test.images), rtol=1e-5, atol=1e-5)
    assert logits.shape == (30, 3)
    mine.save(tmp_path / "copy.safetensors")
    np.testing.assert_array_equal(vpdarts.load_model(tmp_path / "copy.safetensors").predict(test.images),
                                  mine.predict(test.images))


def test_a_search_within_a_budget(backbone, train, tmp_path):
    costly = vpdarts.search(backbone, train, out=tmp_path / "free", **SEARCH)["metrics"]["cost"]
    cheapest = costly["fixed_params"] + sum(min(row) for row in costly["params"])
    budget = int(cheapest + 0.2 * (costly["genotype_params"] - cheapest)) if costly["genotype_params"] > cheapest else int(cheapest)
    found = vpdarts.search(backbone, train, out=tmp_path / "budget", param_budget=budget, **SEARCH)
    cost = found["metrics"]["cost"]
    assert cost["budget"] == budget and cost["genotype_params"] <= budget
    ops = cost["ops"]
    assert cost["genotype_params"] == cost["fixed_params"] + sum(
        cost["params"][l][ops.index(layer["op"])] for l, layer in enumerate(found["genotype"]["layers"]))
    with pytest.raises(ValueError, match="below the cheapest genotype"):
        vpdarts.search(backbone, train, out=tmp_path / "tiny", param_budget=1, **SEARCH)


def test_uint8_images_are_normalised(backbone, train, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 3, size=24)
    r = vpdarts.retrain(backbone, pixels, labels, normalization="imagenet", op="affine", epochs=1, batch=8,
                        out=tmp_path / "u8", quiet=True)
    m = vpdarts.load_model(r["model"])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    as_float = ((pixels / 255.0 - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    np.testing.assert_allclose(m.predict(pixels), m.predict(as_float), rtol=1e-5, atol=1e-5)
    assert r["metrics"]["test_accuracy"] is None  # no test set given
    assert m.class_names == ["0", "1", "2"]


def test_bad_values_raise_value_error(backbone, train, tmp_path):
    out = dict(out=tmp_path / "bad", quiet=True)
    cases = [
        (dict(epochs=0), "--epochs must be >= 1"),
        (dict(bogus=1), "unknown flag '--bogus'"),
        (dict(order="third"), "--order"),
        (dict(w_lr_grid="0.1,-1"), "not a learning rate"),
        (dict(precision="fp8"), "--precision"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            vpdarts.search(backbone, train, **out, **options)
    x, y = train.images, train.labels
    with pytest.raises(ValueError, match=r"\(48, 3, 16, 16\), but the model takes \(N, 3, 32, 32\)"):
        vpdarts.search(backbone, x[:, :, :16, :16], y, **out)
    with pytest.raises(ValueError, match="47 labels for 48 images"):
        vpdarts.search(backbone, x, y[:-1], **out)
    with pytest.raises(ValueError, match="label 7 of image 0 is not in 0..2"):
        vpdarts.search(backbone, x, np.r_[7, y[1:]], class_names=["a", "b", "c"], **out)
    with pytest.raises(ValueError, match="label -1 of image 0 is negative"):
        vpdarts.search(backbone, x, np.r_[-1, y[1:]], **out)
    nan = x.copy()
    nan[5, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="image 5 holds NaN or Inf"):
        vpdarts.search(backbone, nan, y, **out)
    with pytest.raises(ValueError, match="dtype int64"):
        vpdarts.search(backbone, x.astype(np.int64), y, **out)
    with pytest.raises(ValueError, match="uint8: give normalization"):
        vpdarts.search(backbone, x.astype(np.uint8), y, **out)
    with pytest.raises(ValueError, match="labels are of dtype float"):
        vpdarts.search(backbone, x, y.astype(float), **out)
    with pytest.raises(ValueError, match="normalization"):
        vpdarts.search(backbone, train, normalization="sepia", **out)
    with pytest.raises(ValueError, match="--image must be in"):
        vpdarts.load_backbone(PLAIN, image=-1)
    with pytest.raises(ValueError, match="unknown fusion operator 'zoom'"):
        vpdarts.retrain(backbone, train, genotype=["zoom", "add", "add"], **out)
    with pytest.raises(ValueError, match="3 layers|layers"):
        vpdarts.retrain(backbone, train, genotype=["add", "add"], **out)
    with pytest.raises(ValueError, match="--linear-probe and --op exclude each other"):
        vpdarts.retrain(backbone, train, op="add", linear_probe=True, **out)
    with pytest.raises(TypeError):
        vpdarts.search(backbone, train, progress=3, **out)


def test_file_problems_raise_os_error(backbone, train, tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        vpdarts.load_backbone(tmp_path / "missing.safetensors")
    with pytest.raises(OSError, match="does not exist"):
        vpdarts.load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(OSError, match="junk.safetensors"):
        vpdarts.load_model(tmp_path / "junk.safetensors")
    with pytest.raises(OSError, match="is not a vpdarts model file"):
        vpdarts.load_model(PLAIN)
    (tmp_path / "afile").write_text("x")
    with pytest.raises((OSError, ValueError), match="afile"):
        vpdarts.search(backbone, train, out=tmp_path / "afile" / "run", quiet=True, runs=1, epochs=2, warmup_epochs=1)
    with pytest.raises(OSError, match="no genotype"):
        vpdarts.retrain(backbone, train, run=tmp_path / "nothing", quiet=True)


def test_the_gil_is_released_while_vpdarts_computes(backbone, train, tmp_path):
    import threading
    import time

    worker = threading.Thread(target=lambda: vpdarts.search(backbone, train, out=tmp_path / "t", **dict(SEARCH, epochs=8)))
    ticks, start = 0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    seconds = time.perf_counter() - start
    # Python ran alongside: about one tick per millisecond of the search (a held GIL allows a few per step)
    assert ticks > 0.25 * seconds * 1000, (ticks, seconds)


def test_interrupt_and_resume(backbone, train, tmp_path):
    seen = []

    def ctrl_c_in_epoch_2(e):
        seen.append(e["epoch"])
        assert e["alpha"].shape == (3, 4) and e["epochs"] == 4
        if e["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C does

    options = dict(SEARCH, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        vpdarts.search(backbone, train, out=tmp_path / "cut", progress=ctrl_c_in_epoch_2, **options)
    assert seen == [1, 2]
    assert (tmp_path / "cut" / "search.safetensors").exists()
    resumed = vpdarts.search(backbone, train, out=tmp_path / "cut", resume=True, **options)
    whole = vpdarts.search(backbone, train, out=tmp_path / "whole", **options)
    assert resumed["genotype"] == whole["genotype"]
    np.testing.assert_array_equal(resumed["alpha"], whole["alpha"])
    assert resumed["metrics"]["train_loss"] == whole["metrics"]["train_loss"]

    class Stop(Exception):
        pass

    def fails(e):
        raise Stop("from the callback")

    with pytest.raises(Stop, match="from the callback"):
        vpdarts.search(backbone, train, out=tmp_path / "cb", progress=fails, **options)


@pytest.mark.skipif(not vpdarts._vpdarts.has_mpi or not shutil.which("mpirun"), reason="a module built without MPI")
def test_mpirun_shares_a_search(backbone, train, tmp_path):
    """mpirun -np 2 python3: every batch shared over the two processes, the single-process genotype."""
    script = tmp_path / "search.py"
    script.write_text(
        "import json, sys, vpdarts\n"
        f"bb = vpdarts.load_backbone({str(PLAIN)!r}, image=32, heads=2, quiet=True)\n"
        f"data = vpdarts.load_data(bb, **{DATA!r})\n"
        f"r = vpdarts.search(bb, data, out={str(tmp_path / 'mpi')!r}, **{SEARCH!r})\n"
        "json.dump({'genotype': r['genotype'], 'alpha': r['alpha'].tolist(), 'processes': r['metrics']['processes']},\n"
        f"          open({str(tmp_path)!r} + '/out-%d.json' % vpdarts._vpdarts.set_mpi(None)[0], 'w'))\n")
    subprocess.run(["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "2", sys.executable,
                    str(script)], check=True, capture_output=True, timeout=300)
    alone = vpdarts.search(backbone, train, out=tmp_path / "alone", mpi=False, **SEARCH)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"out-{rank}.json").read_text())
        # the same operators; the weights to float rounding (a batch's gradient is summed in two parts)
        assert got["processes"] == 2
        assert [l["op"] for l in got["genotype"]["layers"]] == [l["op"] for l in alone["genotype"]["layers"]]
        np.testing.assert_allclose(got["alpha"], alone["alpha"], rtol=0, atol=1e-4)  # 1.4e-5 seen on AVX-512
    assert (tmp_path / "mpi" / "genotype.json").exists()
    with pytest.raises(ValueError, match="not started by an MPI launcher"):
        vpdarts.search(backbone, train, out=tmp_path / "x", mpi=True, **SEARCH)


# ---- the export to PyTorch

torch = pytest.importorskip("torch")

# (fixture, image side, genotype): every built-in operator, every backbone variant of the fixtures
EXPORTS = [
    ("plain", 32, ["concat", "add", "affine"]),
    ("dinov2_reg4", 28, ["cross_attention", "concat", "add"]),  # registers, pos_embed without prefix, LayerScale
    ("clip_quickgelu", 32, ["affine", "cross_attention", "concat"]),  # norm_pre, QuickGELU, eps 1e-5, no conv bias
    ("gap_fcnorm", 32, ["add", "affine", "cross_attention"]),  # mean pooling, fc_norm
    ("dinov2", 28, None),  # a linear probe
]


def load_exported(folder):
    """vpdarts_model.load from `folder`, imported under a name of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"vpdarts_model_{abs(hash(str(folder)))}", Path(folder) / "vpdarts_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder)


@pytest.mark.parametrize("name,image,genotype", EXPORTS)
def test_export_torch_logits(name, image, genotype, tmp_path):
    bb = vpdarts.load_backbone(FIXTURES / "timm" / name / "backbone.safetensors", image=image, heads=2, quiet=True)
    data = vpdarts.load_data(bb, train_images=32, classes="0-3")
    kind = dict(genotype=genotype) if genotype else dict(linear_probe=True)
    r = vpdarts.retrain(bb, data, out=tmp_path / "rt", epochs=2, batch=8, prompts=3, quiet=True, threads=1, **kind)
    model = vpdarts.load_model(r["model"])
    model.export_torch(tmp_path / "torch")
    exported = load_exported(tmp_path / "torch")
    assert isinstance(exported, torch.nn.Module) and not exported.training
    assert exported.class_names == model.class_names
    with torch.no_grad():
        got = exported(torch.from_numpy(data.images)).numpy()
    want = model.predict(data.images)
    assert np.abs(got - want).max() <= 1e-5, np.abs(got - want).max()  # 2e-7 to 1.7e-6 seen, logits up to 3.8
    names = set(exported.state_dict())
    assert "blocks.0.attn.qkv.weight" in names and "patch_embed.proj.weight" in names
    if genotype:
        for layer, op in enumerate(genotype):
            assert any(n.startswith(f"fusion.{layer}.{op}.") for n in names)


def test_export_command_and_plain_import(backbone, train, tmp_path):
    """`vpdarts export`, then the two lines of a user's own code, in a fresh interpreter with only torch."""
    r = vpdarts.retrain(backbone, train, genotype=["concat", "cross_attention", "affine"], out=tmp_path / "rt",
                        epochs=1, batch=8, quiet=True)
    tool("export", "--model", r["model"], "--to", tmp_path / "exp")
    assert {p.name for p in (tmp_path / "exp").iterdir()} == {"vpdarts_model.py", "config.json", "model.safetensors"}
    np.save(tmp_path / "x.npy", train.images[:5])
    code = (f"import sys; sys.path.insert(0, {str(tmp_path / 'exp')!r})\n"
            "from vpdarts_model import load\n"
            f"model = load({str(tmp_path / 'exp')!r})\n"
            "import torch, numpy\n"
            f"x = torch.from_numpy(numpy.load({str(tmp_path / 'x.npy')!r}))\n"
            f"numpy.save({str(tmp_path / 'y.npy')!r}, model(x).detach().numpy())\n"
            "assert 'vpdarts' not in sys.modules and 'timm' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": os.environ.get("PATH", "")})
    want = vpdarts.load_model(r["model"]).predict(train.images[:5])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=1e-5, rtol=0)
    # refusals name the problem
    bad = subprocess.run([TOOL, "export", "--model", tmp_path / "none.safetensors", "--to", tmp_path / "e2"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    bad = subprocess.run([TOOL, "export", "--model", r["model"]], capture_output=True, text=True)
    assert bad.returncode == 2 and "--to DIR is required" in bad.stderr
    (tmp_path / "plainfile").write_text("x")
    with pytest.raises(OSError, match="not a folder"):
        vpdarts.load_model(r["model"]).export_torch(tmp_path / "plainfile")


def test_nothing_was_written_to_home():
    """Last in the file: no test wrote to the (temporary) home folder."""
    assert not any(HOME.iterdir()), sorted(p.name for p in HOME.iterdir())
