"""``cnncli export``: StableHLO and ONNX artifacts of real models, verified, written atomically.

Runs are built here, not trained: a recipe, ``data.json``, an npz evaluation split of
random pixels and checkpoints written with `cnncli.runs.checkpoint.Checkpoints`, the
way training writes them (`write_run`), or a `LoadedRun` of a freshly built model for the
zoo (`loaded_run`). Random weights make no difference to what is checked: the exported
model must compute what cnncli computes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cnncli.arith import zoo
from cnncli.arith.layers import ACTIVATIONS
from cnncli.errors import ExportError, ExportMismatchError

EXPORT_KEYS = ["path", "format", "metadata", "checkpoint_step", "weights", "raw", "softmax", "input", "output",
               "bytes", "verification", "seconds"]  # fmt: skip
VERIFICATION_KEYS = ["runtime", "split", "source", "examples", "batch_sizes", "max_abs_diff", "top1_agreement",
                     "tolerance", "passed", "per_batch", "note"]  # fmt: skip
MODEL_JSON_KEYS = ["format", "artifact", "input", "output", "raw", "softmax", "class_names", "normalization",
                   "value_range", "recipe_digest", "run", "versions"]  # fmt: skip

TINY = ["conv:c=8,k=3,p=same", "bn", "relu", "maxpool:k=2", "conv:c=8,k=3,p=same", "relu", "gap", "dense"]
ONE_D = ["conv:c=8,k=5,p=same", "bn", "relu", "maxpool:k=2", "resblock:c=8", "conv:c=8,k=3,d=2", "relu", "gap",
         "dense"]  # fmt: skip
FAST_ZOO = {"lenet5"}  # the others are big or deep (ResNet-20: 7 s with a cold compile cache): @slow
ZOO_SHAPES = {"lenet5": (16, 16, 1), "alexnet": (64, 64, 3)}  # the smallest inputs they fit; others 32x32x3


# ------------------------------------------------------------------ fixtures
def _data(root: Path, shape, classes: int, n: int, dtype=np.uint8) -> tuple[Path, np.ndarray]:
    """An npz dataset of ``n`` random examples (the same in train and test), and its images ``(n, *shape)``."""
    x = np.random.default_rng(0).integers(0, 256, (n, *shape)).astype(dtype)
    y = (np.arange(n) % classes).astype(np.int32)
    stored = x[..., 0] if len(shape) == 2 else x  # 1-D signals: npz holds (N, L), read back as (N, L, 1)
    assert len(shape) != 2 or shape[-1] == 1, "1-D npz data has one channel"
    path = root / "data.npz"
    np.savez(path, x_train=stored, y_train=y, x_test=stored, y_test=y)
    return path, x


def _recipe(data: Path, model: dict, **train):
    from cnncli.config.recipe import Recipe

    return Recipe.model_validate({"data": {"source": f"npz:{data}"}, "model": model, "train": {"steps": 1, **train}})


def _facts(x: np.ndarray, classes: int) -> dict:
    """data.json as training writes it, for images ``x``."""
    from cnncli.data.base import channel_stats

    mean, std = channel_stats(x)
    return {"class_names": [f"c{i}" for i in range(classes)], "num_classes": classes, "input_shape": list(x.shape[1:]),
            "mean": mean, "std": std, "value_range": [0.0, 255.0] if x.dtype == np.uint8 else [-1.0, 1.0]}  # fmt: skip


def loaded_run(root: Path, *, arch=None, layers=None, shape=(8, 8, 3), classes=4, n=64, dtype=np.uint8, **train):
    """A `LoadedRun` of a freshly built model (eval mode) over an npz split of ``n`` random examples."""
    from cnncli.models.build import build_model
    from cnncli.runs.load import LoadedRun

    root.mkdir(parents=True, exist_ok=True)
    data, x = _data(root, shape, classes, n, dtype)
    recipe = _recipe(data, {"arch": arch} if arch else {"layers": layers}, **train)
    model, specs = build_model(recipe, tuple(shape), classes)
    facts = _facts(x, classes)
    calibrate_batch_norm(model, x, facts)
    model.eval()
    return LoadedRun(root, recipe, facts, model, specs, 0, {})


def calibrate_batch_norm(model, x: np.ndarray, facts: dict) -> None:
    """Running BatchNorm statistics set to those of ``x``, layer after layer, as training would leave them.

    With freshly initialized statistics (mean 0, variance 1) the deep zoo models' outputs
    grow with depth to 1e5 and more (ResNet-110: 1e9), where float32 cannot hold 1e-4.
    One training-mode pass with momentum 0 makes each running statistic its batch's.
    """
    import jax.numpy as jnp
    from flax import nnx

    from cnncli.models.apply import normalize
    from cnncli.models.norm import BatchNorm

    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm)]
    if not norms:
        return
    for bn in norms:
        bn.momentum = 0.0
    model.train()
    model(normalize(jnp.asarray(x), facts["mean"], facts["std"]))
    for bn in norms:
        bn.momentum = 0.9


def write_run(root: Path, layers=TINY, shape=(8, 8, 1), classes=4, n=64, accuracies=(0.9, 0.5)) -> Path:
    """A run directory as training leaves it: recipe.json, data.json, checkpoints at steps 1, 2, ...

    Checkpoint ``i`` holds the initial weights times ``1 + i / 4`` (so each step computes
    something else) and an EMA of half of them, and records ``accuracies[i]`` as its eval accuracy.
    """
    import jax
    from flax import nnx

    from cnncli.models.build import build_model
    from cnncli.runs import layout as rundir
    from cnncli.runs.checkpoint import Checkpoints

    root.mkdir(parents=True, exist_ok=True)
    data, x = _data(root, shape, classes, n)
    recipe = _recipe(data, {"layers": list(layers)}, ema_decay=0.9)
    rundir.write_json(root / rundir.RECIPE_JSON, recipe.to_dict())
    rundir.write_json(root / rundir.DATA_JSON, _facts(x, classes))
    model, _ = build_model(recipe, tuple(shape), classes)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    store = Checkpoints(root / rundir.CHECKPOINTS, keep=len(accuracies), async_save=False)
    try:
        for i, acc in enumerate(accuracies):
            scaled = jax.tree.map(lambda p, s=1 + i / 4: p * s, params)
            ema = jax.tree.map(lambda p: p * 0.5, scaled)
            store.save(i + 1, {"params": scaled, "rest": rest, "ema": ema}, {"metrics": {"eval_accuracy": acc}})
    finally:
        store.close()
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with checkpoints 1 (eval accuracy 0.9, the best) and 2 (0.5, the latest); read-only."""
    return write_run(tmp_path_factory.mktemp("export") / "run")


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``cnncli ARGV``; return (exit code, stdout, stderr)."""
    from cnncli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def cnncli_outputs(run, x: np.ndarray, softmax: bool = False) -> np.ndarray:
    """What cnncli itself computes for raw ``x``: the logits function of eval and predict."""
    from cnncli.export.serve import reference_fn, signature

    return reference_fn(run, signature(run, x.dtype, softmax=softmax))(x)


def eval_x(run, n: int = 16) -> np.ndarray:
    from cnncli.runs.splits import load_eval_split

    return load_eval_split(run)[0].x[:n]


# ------------------------------------------------------------------ the CLI
def test_stablehlo_json_and_model_json_keys(run_dir, tmp_path, capsys):
    out_path = tmp_path / "m" / "model.stablehlo"
    code, out, err = cli(["export", str(run_dir), "--json", "-o", str(out_path)], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert list(data)[: len(EXPORT_KEYS)] == EXPORT_KEYS
    assert list(data["verification"]) == VERIFICATION_KEYS
    assert data["path"] == str(out_path) and data["metadata"] == str(tmp_path / "m" / "model.json")
    assert data["format"] == "stablehlo" and data["checkpoint_step"] == 2 and data["weights"] == "raw"
    assert data["input"] == {"name": "input", "shape": [None, 8, 8, 1], "dtype": "uint8", "layout": "NHWC"}
    assert data["output"] == {"name": "logits", "shape": [None, 4], "dtype": "float32", "kind": "logits"}
    check = data["verification"]
    assert check["batch_sizes"] == [1, 7, 64] and check["examples"] == 72 and check["passed"] is True
    assert check["tolerance"] == 1e-4 and check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0
    assert check["runtime"] == "jax" and check["split"] == "test" and check["note"] is None
    assert data["bytes"] == out_path.stat().st_size
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert list(card)[: len(MODEL_JSON_KEYS)] == MODEL_JSON_KEYS
    assert card["artifact"] == "model.stablehlo" and card["input"] == data["input"]
    assert card["class_names"] == ["c0", "c1", "c2", "c3"] and card["normalization"]["inside"] is True
    assert card["platforms"] == ["cpu", "cuda"] and card["batch_dim"] == "B"
    assert card["run"]["checkpoint_step"] == 2 and card["versions"].keys() >= {"cnncli", "jax"}
    from cnncli.runs.load import load_recipe_of

    assert card["recipe_digest"] == load_recipe_of(run_dir).digest()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.stablehlo"]  # no temp files


def test_onnx_by_default_inside_the_run(run_dir, tmp_path, capsys):
    import shutil

    run = shutil.copytree(run_dir, tmp_path / "run")
    code, out, err = cli(["export", str(run), "--format", "onnx"], capsys)
    assert code == 0, err
    folder = run / "export" / "onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx"]
    assert "top-1 agreement 100.00%" in out and "under onnxruntime" in out and "\x1b[" not in out
    assert re.search(r"max \|difference\| \d\.\d\de-\d\d \(tolerance 0\.0001\)", out)
    card = json.loads((folder / "model.json").read_text())
    assert card["format"] == "onnx" and card["opset"] >= 17
    assert card["versions"].keys() >= {"cnncli", "jax", "jax2onnx", "onnx", "onnxruntime"}


def test_checkpoint_best_and_ema_are_the_ones_exported(run_dir, tmp_path, capsys):
    from cnncli.export.stablehlo import load_stablehlo
    from cnncli.runs.load import load_run

    for args, step, ema in ((["--checkpoint", "best"], 1, False), (["--ema"], 2, True), (["-c", "2"], 2, False)):
        path = tmp_path / f"{step}{ema}.stablehlo"
        code, out, err = cli(["export", str(run_dir), "-o", str(path), "--json", *args], capsys)
        assert code == 0, err
        data = json.loads(out)
        assert (data["checkpoint_step"], data["weights"]) == (step, "ema" if ema else "raw")
        run = load_run(run_dir, step, ema=ema)
        x = eval_x(run)
        got = load_stablehlo(path.read_bytes())(x)
        np.testing.assert_allclose(got, cnncli_outputs(run, x), atol=1e-5)
        assert json.loads(path.with_suffix(".json").read_text())["run"]["weights"] == data["weights"]
    best, latest = (load_stablehlo((tmp_path / f"{s}False.stablehlo").read_bytes())(x) for s in (1, 2))
    assert not np.allclose(best, latest)  # they really are different checkpoints


def test_readme_loading_lines_work(run_dir, tmp_path, capsys):
    """The README's Export section: its Python blocks run as written (paths pointed at this run)."""
    from cnncli.runs.load import load_run

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) == 3  # JAX: three lines; onnxruntime
    for fmt in ("stablehlo", "onnx"):
        assert cli(["export", str(run_dir), "-f", fmt, "-o", str(tmp_path / fmt / f"model.{fmt}")], capsys)[0] == 0
    x = eval_x(load_run(run_dir))
    want = cnncli_outputs(load_run(run_dir), x)
    for block in blocks:
        code = re.sub(r'"runs/quickstart/export/(\w+)/model\.(\w+)"', lambda m: repr(str(tmp_path / m[1] / f"model.{m[2]}")),
                      block)  # fmt: skip
        scope = {"x": x}
        exec(code, scope)  # noqa: S102 - the README's own lines
        np.testing.assert_allclose(np.asarray(scope["logits"]), want, atol=1e-4)


def test_raw_input_and_softmax_output(tmp_path):
    from cnncli.export.exporter import export_run
    from cnncli.export.stablehlo import load_stablehlo

    run = loaded_run(tmp_path / "run", layers=TINY, shape=(8, 8, 3))
    result = export_run(run, output=tmp_path / "raw.stablehlo", raw=True, softmax=True)
    card = json.loads((tmp_path / "raw.json").read_text())
    assert card["raw"] is True and card["softmax"] is True and card["normalization"]["inside"] is False
    assert card["input"]["dtype"] == "float32" and card["output"]["kind"] == "probabilities"
    assert result.verification.passed and result.input["dtype"] == "float32"
    x = eval_x(run)
    mean, std = np.asarray(card["normalization"]["mean"], np.float32), np.asarray(card["normalization"]["std"], np.float32)
    probs = load_stablehlo((tmp_path / "raw.stablehlo").read_bytes())((x.astype(np.float32) - mean) / std)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, cnncli_outputs(run, x, softmax=True), atol=1e-6)


def test_a_mismatch_is_an_error_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    from cnncli.export import exporter
    from cnncli.runs.load import load_run

    real = exporter._load

    def load_off_by_2e4(fmt, blob):
        exported = real(fmt, blob)
        return lambda x: exported(x) + 2e-4

    monkeypatch.setattr(exporter, "_load", load_off_by_2e4)
    for fmt in ("stablehlo", "onnx"):
        out_path = tmp_path / "new" / "deeper" / f"model.{fmt}"
        code, out, err = cli(["export", str(run_dir), "-f", fmt, "-o", str(out_path)], capsys)
        assert code == 1 and out == ""
        assert "error: the exported" in err and "differ from cnncli's by up to 0.0002" in err and "tolerance 0.0001" in err
        assert "nothing was written" in err and "report the model's recipe as a bug" in err
        assert not (tmp_path / "new").exists()  # no artifact, no model.json, no temp file, no new folder
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model.onnx").write_bytes(b"an earlier export")
    with pytest.raises(ExportMismatchError):
        exporter.export_run(load_run(run_dir), fmt="onnx", output=kept / "model.onnx")
    assert [p.name for p in kept.iterdir()] == ["model.onnx"] and (kept / "model.onnx").read_bytes() == b"an earlier export"
    # A model that amplifies rounding (cnncli's own outputs move as much): the error says so and how to accept it.
    monkeypatch.setattr(exporter, "reference_spread", lambda run, sig, x: 1e-4)
    code, _, err = cli(["export", str(run_dir), "-o", str(tmp_path / "a.stablehlo")], capsys)
    assert code == 1 and "this model amplifies float32 rounding" in err and "hint: accept it with --tolerance 0.001" in err
    code, out, err = cli(["export", str(run_dir), "-o", str(tmp_path / "a.stablehlo"), "--tolerance", "1e-3"], capsys)
    assert code == 0 and "(tolerance 0.001)" in out and (tmp_path / "a.stablehlo").exists()


def test_usage_errors(run_dir, tmp_path, capsys):
    code, _, err = cli(["export", str(run_dir), "--format", "onx"], capsys)
    assert code == 2 and "unknown format 'onx'; did you mean 'onnx'?" in err
    code, _, err = cli(["export", str(run_dir), "-o", str(tmp_path / "model.json")], capsys)
    assert code == 2 and "model.json" in err


# ------------------------------------------------------------ what ONNX cannot say
def test_onnx_lists_every_unexpressible_layer_at_once(tmp_path, capsys):
    from cnncli.export.exporter import export_run
    from cnncli.export.onnx_format import unsupported_layers

    layers = ["conv:c=4,k=3,p=1,pm=edge", "relu", "maxpool:k=4,s=2", "conv:c=4,k=3,p=1,pm=edge", "gap", "dense"]
    run = loaded_run(tmp_path / "run", layers=layers, shape=(12, 12, 2))
    with pytest.raises(ExportError) as exc:
        export_run(run, fmt="onnx")
    message = str(exc.value)
    assert "3 parts of this model cannot be expressed in ONNX" in message
    for line in ("conv1 (conv:c=4,k=3,p=1,pm=edge): edge padding", "maxpool1 (maxpool:k=4,s=2): max pooling",
                 "conv2 (conv:c=4,k=3,p=1,pm=edge): edge padding"):  # fmt: skip
        assert f"\n  {line}" in message
    assert "--format stablehlo" in exc.value.hint
    assert not (tmp_path / "run" / "export").exists()

    three_d = loaded_run(tmp_path / "3d", layers=["conv:c=4,k=3", "resblock:c=4", "maxpool:k=2", "gap", "dense"],
                         shape=(6, 6, 6, 1), n=4)  # fmt: skip
    names = [u.layer for u in unsupported_layers(three_d)]
    assert names == ["conv1", "resblock1.conv1", "resblock1.conv2"]  # 3-D convolutions; a tiling 3-D maxpool is fine
    bf16 = loaded_run(tmp_path / "bf16", layers=TINY, precision="bf16", n=8)
    assert [(u.layer, u.token) for u in unsupported_layers(bf16)] == [("train.precision", "bf16")]
    assert export_run(bf16).verification.tolerance == 1e-2  # bfloat16 runs export to StableHLO


def test_a_small_split_checks_the_batch_sizes_it_has(tmp_path, capsys):
    from cnncli.export.exporter import export_run
    from cnncli.report.export import print_export

    result = export_run(loaded_run(tmp_path / "run", layers=TINY, n=5))
    assert result.verification.batch_sizes == [1, 5] and result.verification.examples == 6
    print_export(result, json_out=False)
    assert "only 5 examples: checked batch sizes 1, 5 instead of 1, 7, 64" in capsys.readouterr().err


# ------------------------------------------------------------------ every model
def _zoo_param(name: str):
    return pytest.param(name, marks=() if name in FAST_ZOO else pytest.mark.slow)


@pytest.fixture
def release_compiled_programs():
    """Drop JAX's compiled programs after each big model: one worker exporting every zoo
    model in turn otherwise kept them all and was killed for memory (23.5 GB RSS, 24 GB box)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx"])
@pytest.mark.parametrize("arch", [_zoo_param(name) for name in zoo.names()])
def test_every_zoo_architecture_exports_and_verifies(arch, fmt, tmp_path, release_compiled_programs):
    from cnncli.export.exporter import export_run
    from cnncli.export.serve import reference_spread, signature

    run = loaded_run(tmp_path / arch, arch=arch, shape=ZOO_SHAPES.get(arch, (32, 32, 3)), classes=10)
    try:
        result = export_run(run, fmt=fmt)
    except ExportMismatchError:
        # ImageNet ResNets with BatchNorm statistics of random data amplify float32 rounding
        # past 1e-4 even between two XLA compilations (ResNet-50: 2.4e-4 on logits of 6):
        # they are held to 4x how far cnncli's own outputs move instead.
        x = eval_x(run, 64)
        result = export_run(run, fmt=fmt, tolerance=4 * reference_spread(run, signature(run, x.dtype), x))
    assert result.verification.passed and result.verification.batch_sizes == [1, 7, 64]
    assert result.verification.top1_agreement == 1.0
    assert result.path == tmp_path / arch / "export" / fmt / f"model.{fmt}" and result.path.exists()


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx"])
def test_a_1d_model_exports_and_verifies(fmt, tmp_path):
    from cnncli.export.exporter import export_run

    run = loaded_run(tmp_path / "run", layers=ONE_D, shape=(32, 1), dtype=np.float32)
    result = export_run(run, fmt=fmt)
    assert result.verification.passed and result.input == {
        "name": "input", "shape": [None, 32, 1], "dtype": "float32", "layout": "NWC"
    }  # fmt: skip


KIND_CASES = {  # every layer kind of cnncli.arith.layers, in a small model: (tokens, input shape)
    "conv": (["conv:c=4,k=3,s=2,d=1,g=2,p=0-1"], (9, 9, 2)),
    "conv-dilated": (["conv:c=4,k=3,d=2,p=same,bias=false"], (9, 9, 2)),
    "conv-circular": (["conv:c=4,k=3,p=1,pm=circular"], (8, 8, 2)),
    "conv-reflect": (["conv:c=4,k=3,p=1,pm=reflect"], (8, 8, 2)),
    "tconv": (["tconv:c=4,k=3,s=2,g=2,p=1,op=1"], (6, 6, 2)),
    "maxpool-tiles": (["maxpool:k=2"], (9, 9, 2)),
    "maxpool-slices": (["maxpool:k=3,s=2,p=1,ceil=true"], (9, 9, 2)),
    "maxpool-1d-reduce-window": (["maxpool:k=4,s=2"], (16, 1)),
    "avgpool": (["avgpool:k=3,s=2,p=1,ceil=true"], (9, 9, 2)),
    "l2pool": (["l2pool:k=2,d=2,s=1"], (8, 8, 2)),
    "gmp": (["gmp"], (8, 8, 2)),
    "flatten": (["flatten"], (4, 4, 2)),
    # LayerNorm over 8 channels: over 2 nearly equal ones, flax's E[x^2] - E[x]^2 and onnxruntime's
    # variance part by 2e-4, a fault of the input's conditioning, not of the conversion.
    "bn-ln-dropout": (["conv:c=8,k=3", "bn", "ln", "dropout:r=0.3"], (6, 6, 2)),
    "blocks": (
        ["resblock:c=4,s=2", "resblock:c=4,sc=pad", "bottleneck:c=2,s=2", "denseblock:n=2,gr=2", "transition:c=4"],
        (8, 8, 2),
    ),
    "3d-pools": (["maxpool:k=2", "avgpool:k=2", "l2pool:k=2", "bn"], (8, 8, 8, 2)),
    "activations": (list(ACTIVATIONS), (4, 4, 2)),
}
BLOCKED_CASES = {  # what `unsupported_layers` lists, forced through conversion: each must really fail
    "conv-3d": (["conv:c=4,k=3"], (5, 5, 5, 2)),
    "conv-edge": (["conv:c=4,k=3,p=1,pm=edge"], (8, 8, 2)),
    "maxpool-2d-reduce-window": (["maxpool:k=4,s=2"], (9, 9, 2)),
    "maxpool-3d-reduce-window": (["maxpool:k=3,s=2"], (5, 5, 5, 2)),
}


@pytest.mark.slow
def test_the_onnx_list_is_true_to_jax2onnx(tmp_path, monkeypatch):
    """Every layer kind converts and matches unless `unsupported_layers` lists it; what it lists really fails."""
    from cnncli.export import onnx_format
    from cnncli.export.exporter import export_run

    for name, (layers, shape) in KIND_CASES.items():
        head = ["dense"] if layers[-1] in ("flatten", "gmp") else ["gap", "dense"]
        run = loaded_run(tmp_path / name, layers=[*layers, *head], shape=shape, n=8)
        assert onnx_format.unsupported_layers(run) == [], name
        assert export_run(run, fmt="onnx").verification.passed, name
    monkeypatch.setattr(onnx_format, "unsupported_layers", lambda run: [])
    for name, (layers, shape) in BLOCKED_CASES.items():
        run = loaded_run(tmp_path / name, layers=[*layers, "gap", "dense"], shape=shape, n=8)
        with pytest.raises(ExportError):  # jax2onnx's error, onnxruntime's, or a mismatch
            export_run(run, fmt="onnx")
        assert not (tmp_path / name / "export" / "onnx").exists(), name
        assert export_run(run, fmt="stablehlo").verification.passed, name  # StableHLO expresses them
