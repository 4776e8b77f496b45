"""The command line answers --help and argument errors without importing a backend."""

import subprocess
import sys

import pytest

# In a fresh interpreter: run the CLI with ARGS and report which backends (or matplotlib) got imported.
PROBE = """
import sys
from click.testing import CliRunner
from keras_fada.cli.main import cli
result = CliRunner().invoke(cli, sys.argv[1:])
loaded = sorted(m for m in ("keras", "tensorflow", "jax", "torch", "matplotlib") if m in sys.modules)
print(result.exit_code, ",".join(loaded) or "-")
"""


@pytest.mark.parametrize(
    "args, code",
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["evaluate", "--help"], 0),
        (["ccd", "--help"], 0),
        (["predict", "--help"], 0),
        (["convert", "--help"], 0),
        (["check-data", "--help"], 0),
        (["train", "--task", "gta"], 2),
        (["train", "--task", "synthetic", "--backbone", "resnet50"], 2),
    ],
)
def test_help_and_argument_errors_import_no_backend(args, code):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exit_code, loaded = proc.stdout.split()
    assert (int(exit_code), loaded) == (code, "-")


def test_a_config_mistake_is_one_line_before_any_backend_loads():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "train", "--task", "synthetic", "adapt.stpes=3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["2", "-"], proc.stdout + proc.stderr[-2000:]


def test_train_with_a_missing_split_fails_before_any_backend_loads(tmp_path):
    # train lists and pairs every split its stages read before building a network
    from tests.support.data_trees import make_cityscapes, make_gta5

    make_gta5(str(tmp_path / "gta5"), n=2)
    make_cityscapes(str(tmp_path / "cityscapes"), "train")  # no val split
    args = ["train", "--task", "gta2cs", "--data-root", str(tmp_path), "--output", str(tmp_path / "run")]
    for extra in ([], ["--pretrained", "scratch"]):  # the missing ImageNet weights, then the missing split
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, *args, *extra], capture_output=True, text=True, timeout=60
        )
        assert proc.stdout.split() == ["2", "-"], proc.stdout + proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()
