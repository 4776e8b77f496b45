"""``keras-fada train --devices``: user mistakes are one Error line; 2 devices train on each backend."""

import os

import keras
import pytest

from tests.support.cli import TINY, assert_user_error, run

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


def test_train_runs_on_two_devices(two_device_runs):
    """The source stage of the synthetic task on 2 devices, launched as a user does (conftest.cli_run,
    started before the first test of the folder)."""
    run, output = two_device_runs["cli"]
    code, stdout, stderr = run.wait()
    assert code == 0, stdout[-2000:] + stderr[-3000:]
    assert "target mIoU" in stdout
    assert os.path.isfile(os.path.join(output, "source", "metrics.json"))
