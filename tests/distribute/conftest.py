"""The 2-device subprocesses of tests/distribute (test_data_parallel's worker, test_cli's training
run) start when the first test of this folder does, and run while the in-process tests do; the
tests that read them wait for them. Only the selected tests' subprocesses start."""

import os
import sys

import keras
import pytest

from tests.support.cli import TINY
from tests.support.subprocess_npz import Background, StartedNpz

BACKEND = keras.backend.backend()
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"} if BACKEND == "jax" else {}


def cli_run(output):
    """``keras-fada train`` on 2 devices as a user launches it (torch: under torchrun): the source
    stage of the synthetic task, 1 step of 1+1 images."""
    launch = [sys.executable, "-m", "keras_fada.cli.main"]
    if BACKEND == "torch":
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *launch[1:]]
    args = ["train", "--task", "synthetic", "--stage", "source", "--devices", "2", "--quiet"]
    args += ["--output", output, *TINY, "source.steps=1"]
    return Background([*launch, *args], TWO_DEVICES, os.path.join(os.path.dirname(output), "cli"))


@pytest.fixture(scope="session", autouse=True)
def two_device_runs(request, tmp_path_factory):
    """``{"worker": StartedNpz, "cli": (Background, output)}``, each present when a selected test reads it."""
    selected = [item.nodeid for item in request.session.items]
    runs = {}
    if any("test_data_parallel.py" in n for n in selected):
        out = tmp_path_factory.mktemp("dp") / f"{BACKEND}.npz"
        runs["worker"] = StartedNpz("tests.distribute.worker", out, TWO_DEVICES)
    if any("test_train_runs_on_two_devices" in n for n in selected):
        output = str(tmp_path_factory.mktemp("cli") / "run")
        runs["cli"] = (cli_run(output), output)
    yield runs
    for run in runs.values():
        (run.run if isinstance(run, StartedNpz) else run[0]).stop()
