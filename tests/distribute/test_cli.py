"""``keras-fada train --devices``: user mistakes are one Error line; 2 devices train on each backend."""

import os
import subprocess
import sys

import keras
import pytest

from tests.support.cli import TINY, assert_user_error, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = keras.backend.backend()


def test_bad_devices_and_accumulation_are_one_error_line(tmp_path):
    out = tmp_path / "run"
    code, text, _ = run("train", "--task", "synthetic", "--devices", "-1", "--output", out, *TINY)
    assert_user_error(code, text, "devices must be a number >= 1, or 0 / 'all'")
    code, text, _ = run(
        "train", "--task", "synthetic", "--stage", "source", "--output", out, "accumulation_steps=3", *TINY
    )
    assert_user_error(code, text, "source: a batch of 2 images per domain does not split into 1 devices x 3")


@pytest.mark.skipif(BACKEND != "torch", reason="torch runs one process per device")
def test_torch_without_torchrun_names_the_launch_command(tmp_path):
    code, text, _ = run("train", "--task", "synthetic", "--devices", "2", "--output", tmp_path / "run", *TINY)
    assert_user_error(code, text, "torchrun --nproc_per_node 2")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="Keras' loss scaling under MirroredStrategy")
def test_float16_on_several_tensorflow_devices_is_refused(tmp_path):
    out = tmp_path / "run"
    code, text, _ = run(
        "train", "--task", "synthetic", "--devices", "2", "--output", out, "precision=mixed_float16", *TINY
    )
    assert_user_error(code, text, "precision=mixed_float16 with --devices 2 is not supported on TensorFlow")


def test_train_runs_on_two_devices(tmp_path):
    """The source stage of the synthetic task, 2 steps of 1+1 images on 2 devices, with 2 micro-batches."""
    args = ["train", "--task", "synthetic", "--stage", "source", "--devices", "2", "--quiet"]
    args += ["--output", str(tmp_path / "run"), *TINY, "source.batch_size=4", "accumulation_steps=2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    launch = [sys.executable, "-m", "keras_fada.cli.main"]
    if BACKEND == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    if BACKEND == "torch":
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "keras_fada.cli.main",
        ]
    proc = subprocess.run([*launch, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "target mIoU" in proc.stdout
    assert os.path.isfile(tmp_path / "run" / "source" / "metrics.json")
