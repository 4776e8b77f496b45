"""Data parallel on 2 devices equals one device on the same global batch (2+2 per replica, the
replicas holding different numbers of labelled pixels), on each backend's own engine."""

import keras
import pytest

from tests.distribute import common, worker
from tests.support.subprocess_npz import run_to_npz

BACKEND = keras.backend.backend()


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp") / f"{BACKEND}.npz"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"} if BACKEND == "jax" else {}
    return run_to_npz("tests.distribute.worker", out, env)


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


@pytest.mark.skipif(BACKEND == "tensorflow", reason="mixed_float16 x MirroredStrategy is refused")
def test_an_overflow_on_one_replica_skips_the_step_on_all(two_devices):
    """mixed_float16: every replica skips the step and halves the scale, the step is counted."""
    start = {n[len("f16/start/") :]: v for n, v in two_devices.items() if n.startswith("f16/start/")}
    for name, value in start.items():
        assert (two_devices[f"f16/w/{name}"] == value).all(), name
    assert float(two_devices["f16/scale"]) == 2.0**14
    assert int(two_devices["f16/steps"]) == 1
    assert two_devices["f16/updates"].tolist() == [0, 0, 0]
