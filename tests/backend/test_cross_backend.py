"""The strongest check we have: TensorFlow, JAX and PyTorch train FADA identically."""

import keras
import numpy as np
import pytest

from tests.support.subprocess_npz import run_to_npz

BACKENDS = ("tensorflow", "jax", "torch")


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="spawns all three backends; runs once, in the TensorFlow run",
)
def test_two_fada_steps_agree_across_backends(tmp_path):
    results = {}
    for backend in BACKENDS:
        out = tmp_path / f"{backend}.npz"
        results[backend] = run_to_npz(
            "tests.support.cross_backend_step", out, {"KERAS_BACKEND": backend}, 300
        )
    reference = results["tensorflow"]
    initial_names = sorted(reference)
    discriminator = [n for n in initial_names if n.startswith("w") and "discriminator" in n]
    for backend in ("jax", "torch"):
        got = results[backend]
        assert sorted(got) == initial_names
        for name in initial_names:
            if name.startswith("step"):
                assert got[name] == pytest.approx(reference[name], rel=1e-5), (backend, name)
            elif name in discriminator:
                # Adam's first update is lr * g / (|g| + 1e-8): where |g| is near epsilon, float
                # noise of 1e-9 in g (sums whose order differs per backend and CPU) moves it by a
                # sizeable part of lr_d (1e-3). Where the first gradient is resolved (|g| >= 1e-6)
                # the weights must agree to 1% of one update; elsewhere to one update.
                first_grad = 10.0 * reference[f"first_m{discriminator.index(name):03d}"]
                resolved = np.abs(first_grad) >= 1e-6
                assert resolved.mean() > 0.3, name
                np.testing.assert_allclose(
                    got[name][resolved], reference[name][resolved], rtol=1e-5, atol=1e-5, err_msg=name
                )
                np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-3, err_msg=name)
            else:
                # Adam's first moments are 0.1 x D's weight gradients, sums over all pixels whose
                # float32 order differs per backend: compared normwise (1e-5 of the largest).
                scale = np.abs(reference[name]).max()
                atol = 1e-5 * scale if name.startswith(("adam_m", "first_m")) else 1e-6
                np.testing.assert_allclose(
                    got[name], reference[name], rtol=1e-5, atol=atol, err_msg=f"{backend} {name}"
                )
