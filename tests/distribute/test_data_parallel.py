"""Data parallel on 2 devices equals one device on the same global batch (2+2 per replica, the
replicas holding different numbers of labelled pixels), on each backend's own engine."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.distribute import common, worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = keras.backend.backend()


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp") / f"{BACKEND}.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if BACKEND == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.distribute.worker", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("mode,steps", worker.CASES)
def test_two_devices_equal_one_device(two_devices, mode, steps):
    want_logs, want = common.reference(mode)
    got = {
        n[len(f"{mode}{steps}/w/") :]: v for n, v in two_devices.items() if n.startswith(f"{mode}{steps}/w/")
    }
    assert got.keys() == want.keys()
    assert common.relative_difference(got, want) < 1e-5
    for key in ("seg_loss", "adv_loss", "d_loss", "loss"):  # logged losses are global
        assert float(two_devices[f"{mode}{steps}/log/{key}"]) == pytest.approx(want_logs[key], rel=1e-5), key
