"""The distribution installs every package and no top-level `cli` module."""

import pathlib
import subprocess
import sys

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "keras_fada").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "cli" not in listed and config["package-dir"]["keras_fada.cli"] == "cli"
    assert config["package-dir"]["keras_fada.configs"] == "configs"


def test_every_config_folder_is_listed_in_pyproject():
    # a task folder missing from `packages` would not be installed by a non-editable install
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {f"keras_fada.configs.{p.parent.name}" for p in (ROOT / "configs").glob("*/*.yaml")}
    assert folders <= set(config["packages"]), f"add {sorted(folders - set(config['packages']))} to packages"
    assert config["package-data"]["*"] == ["*.yaml"]


# Runs in a fresh interpreter where the optional backends other than the one under test cannot be
# imported, as in `pip install keras-fada[<backend>]`: keras-fada and its CLI must load, and a FADA
# step must run, without them.
WITHOUT_OTHER_BACKENDS = """
import os, sys
backend = os.environ.get("KERAS_BACKEND", "tensorflow")
hidden = [n for n in ("jax", "torch") if n != backend]
for name in hidden:
    sys.modules[name] = None
import numpy as np
import keras_fada, keras_fada.cli.main
from keras_fada.models import deeplabv2_resnet_small
model = keras_fada.FADA(deeplabv2_resnet_small(3))
model.compile()
rng = np.random.default_rng(0)
batch = {
    "source_images": rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32"),
    "source_labels": rng.integers(0, 3, (1, 32, 32)).astype("int32"),
    "target_images": rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32"),
}
logs = model.train_on_batch(batch, return_dict=True)
assert all(np.isfinite(float(v)) for v in logs.values()), logs
assert all(sys.modules[n] is None for n in hidden), "a hidden backend was imported"
print("ok", sorted(logs))
"""


def test_runs_without_the_other_optional_backends():
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTHER_BACKENDS], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok"), proc.stdout


def test_one_tensorflow_distribution_in_every_install():
    # tensorflow-cpu beside tensorflow[and-cuda] (the gpu extra) installs two distributions of one
    # import name; every requirement names the same one (.ci/run also resolves .[gpu] with pip)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    names = {r.split("[")[0].split(">")[0].split("=")[0].split(";")[0].strip() for r in requirements}
    assert {n for n in names if n.startswith("tensorflow") or n.startswith("tf-")} == {"tensorflow"}
    assert "tensorflow[and-cuda]>=2.21" in project["optional-dependencies"]["gpu"]
