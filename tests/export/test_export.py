"""Export, reload with each format's own runtime, and compare with the in-framework segmentor at
input sizes the export never saw (the reference upsampling is NumPy's align-corners matrix)."""

import keras
import numpy as np
import pytest

from keras_fada import export as E
from keras_fada.models.deeplabv2 import deeplabv2_resnet_small
from tests.support.cli import assert_user_error, run

K = 5
SIZES = [(32, 64), (41, 57)]  # the export builds at 33x49 and traces at 1x1 (torch) or symbolically
BACKEND = keras.backend.backend()


def _align_corners_matrix(n_in, n_out):
    """PyTorch's align_corners=True linear interpolation, written independently of keras_fada."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        s = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        lo = min(int(np.floor(s)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[o, lo] += 1 - (s - lo)
        m[o, hi] += s - lo
    return m


def _reference(segmentor, x):
    logits = keras.ops.convert_to_numpy(segmentor(x)).astype("float64")
    rows = _align_corners_matrix(logits.shape[1], x.shape[1])
    cols = _align_corners_matrix(logits.shape[2], x.shape[2])
    return np.einsum("oh,pw,nhwc->nopc", rows, cols, logits)


def _images(hw, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (2, *hw, 3)).astype("float32")


@pytest.fixture(scope="module")
def segmentor():
    keras.utils.set_random_seed(7)
    return deeplabv2_resnet_small(K)


def _runner(fmt, path):
    if fmt == "saved_model":
        tf = pytest.importorskip("tensorflow")
        loaded = tf.saved_model.load(path)
        return lambda x: loaded.serve(x).numpy()
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(path)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    model = keras.saving.load_model(path)
    return lambda x: keras.ops.convert_to_numpy(model(x))


@pytest.mark.parametrize("fmt", E.FORMATS)
def test_export_reloads_and_matches_at_unseen_sizes(segmentor, fmt, tmp_path):
    if (BACKEND, fmt) in E.UNSUPPORTED:
        with pytest.raises(E.ExportError, match=f"cannot export {fmt}: .*KERAS_BACKEND="):
            E.export_segmentor(segmentor, tmp_path, fmt)
        return
    predict = _runner(fmt, E.export_segmentor(segmentor, tmp_path, fmt))
    for i, hw in enumerate(SIZES):
        x = _images(hw, seed=i)
        ref = _reference(segmentor, x)
        got = predict(x)
        assert got.shape == (2, *hw, K)  # was (256, 1, 1, K) from torch's ONNX trace (issue 24)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_heads_labels_and_probabilities(segmentor, tmp_path):
    x = _images((24, 40), seed=3)
    ref = _reference(segmentor, x)
    labels = keras.saving.load_model(E.export_segmentor(segmentor, tmp_path / "l", "keras", head="labels"))
    got = keras.ops.convert_to_numpy(labels(x))
    assert got.dtype == np.int32 and got.shape == (2, 24, 40)
    np.testing.assert_array_equal(got, ref.argmax(-1))
    probs = keras.saving.load_model(
        E.export_segmentor(segmentor, tmp_path / "p", "keras", head="probabilities")
    )
    e = np.exp(ref - ref.max(-1, keepdims=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs(x)), e / e.sum(-1, keepdims=True), atol=1e-5)


def test_cli_export_fixed_size_and_unsupported_format(segmentor, tmp_path):
    ckpt = tmp_path / "g.keras"
    segmentor.save(ckpt)
    # JAX's SavedModel export (jax2tf) takes most of a minute on 2 cores: the keras file there
    fmt = "onnx" if (BACKEND, "onnx") not in E.UNSUPPORTED else "keras"
    common = ("--checkpoint", ckpt, "--output", tmp_path / "out")
    code, text, res = run("export", *common, "--format", fmt, "--size", "32x64", "--head", "labels")
    assert code == 0, text + repr(res.exception)
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
        assert session.get_inputs()[0].shape[1:] == [32, 64, 3]
        got = session.run(None, {session.get_inputs()[0].name: _images((32, 64))})[0]
    else:
        loaded = keras.saving.load_model(tmp_path / "out" / "model.keras")
        got = keras.ops.convert_to_numpy(loaded(_images((32, 64))))
    np.testing.assert_array_equal(got, _reference(segmentor, _images((32, 64))).argmax(-1))
    for (backend, unsupported), reason in E.UNSUPPORTED.items():
        if backend == BACKEND:
            code, text, _ = run("export", *common, "--format", unsupported)
            assert_user_error(code, text, f"cannot export {unsupported}", reason.split()[0])
    code, text, _ = run("export", *common, "--format", "keras", "--size", "32by64")
    assert_user_error(code, text, "--size must be HxW")


def test_keras_file_loads_in_a_fresh_process_with_only_the_export_module(segmentor, tmp_path):
    # was: TypeError, Segmentor not registered unless keras_fada.models had been imported
    import subprocess
    import sys

    path = E.export_segmentor(segmentor, tmp_path, "keras")
    code = f"import keras, keras_fada.export; print(keras.saving.load_model({path!r}).head)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("logits"), out.stderr[-500:]
