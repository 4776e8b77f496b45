"""Data parallel on 2 devices equals one device on the same global batch (2+2 per replica, the
replicas holding different numbers of labelled pixels), on each backend's own engine."""

import keras
import numpy as np
import pytest

from tests.distribute import common, worker

BACKEND = keras.backend.backend()


@pytest.fixture(scope="module")
def two_devices(two_device_runs):
    """The worker's arrays (started by conftest.py before the first test of the folder)."""
    return two_device_runs["worker"].result()


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


def test_an_overflow_on_one_replica_skips_the_step_on_all(two_devices):
    """mixed_float16: every replica skips the step and halves the scale, the step is counted."""
    start = {n[len("f16/start/") :]: v for n, v in two_devices.items() if n.startswith("f16/start/")}
    for name, value in start.items():
        assert (two_devices[f"f16/w/{name}"] == value).all(), name
    assert float(two_devices["f16/scale"]) == 2.0**14
    assert int(two_devices["f16/steps"]) == 1
    assert two_devices["f16/updates"].tolist() == [0, 0, 0]


def test_moving_statistics_are_averaged_over_devices(two_devices):
    """BatchNorm in training mode: each device normalises by its own rows (TF, torch) or the whole
    batch (JAX), and every device ends with the same moving statistics, from the whole batch."""
    x = common.batch()["source_images"].astype("float64")  # rows 0-1 on device 0, 2-3 on device 1
    kept = common.BN_MOMENTUM**common.STEPS
    if BACKEND == "jax":  # global arrays: the statistics of the whole batch
        var = x.var((0, 1, 2))
    else:
        var = np.mean([x[:2].var((0, 1, 2)), x[2:].var((0, 1, 2))], axis=0)
    want = {"bn/mean": (1 - kept) * x.mean((0, 1, 2)), "bn/var": kept + (1 - kept) * var}
    for key, value in want.items():
        got = two_devices[key]
        assert got.shape == (2, *value.shape), key
        np.testing.assert_allclose(got, np.broadcast_to(value, got.shape), rtol=1e-5, err_msg=key)
