"""In-graph decoding (no tf.py_function) equals the eager readers of keras_fada.data.io exactly."""

import io as pyio

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_fada import data as kd
from keras_fada.data import io as dio
from keras_fada.data import labels as L
from tests.support.data_trees import make_cityscapes, make_crosscity, make_gta5, make_synthia, rgb


def _graph_decode(images, labels, fmt, lut):
    """Decode through a tf.data map (graph mode), as the pipeline does."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).map(
        lambda i, y: (dio.decode_image_in_graph(i), dio.decode_label_in_graph(y, fmt, lut))
    )
    return list(ds.as_numpy_iterator())


def _specs(root):
    make_gta5(str(root / "gta5"), n=3)
    make_synthia(str(root / "synthia"), n=2)
    make_cityscapes(str(root / "cs"), "val", cities=("bonn",), per_city=2)
    make_crosscity(str(root / "nthu"), "Rio", n_train=1, n_test=2, test_exts=(".png", ".jpg"))
    return [
        kd.gta5(str(root / "gta5")),
        kd.synthia(str(root / "synthia")),
        kd.cityscapes(str(root / "cs"), "val"),
        kd.crosscity(str(root / "nthu"), "Rio", "test"),
    ]


def test_every_dataset_decodes_in_the_graph_to_the_eager_values(tmp_path, monkeypatch):
    specs = _specs(tmp_path)
    expected = {}
    for spec in specs:  # the eager readers (Pillow for palette indices, TF eager for 16-bit)
        images, labels = spec.list_files()
        lut = dio.label_lut(spec)
        expected[spec.name] = [
            (dio.read_image(i), dio.read_label(y, spec.label_format, lut))
            for i, y in zip(images, labels, strict=True)
        ]

    def forbidden(*a, **k):  # tf.py_function holds the GIL: none of these files may need it
        raise AssertionError("decoded in Python, not in the graph")

    monkeypatch.setattr(dio, "read_image", forbidden)
    monkeypatch.setattr(dio, "read_label", forbidden)
    for spec in specs:
        images, labels = spec.list_files()
        got = _graph_decode(images, labels, spec.label_format, dio.label_lut(spec))
        assert len(got) == len(expected[spec.name]) > 0
        for (gi, gy), (ei, ey) in zip(got, expected[spec.name], strict=True):
            assert gi.dtype == np.uint8 and gy.dtype == np.uint8
            np.testing.assert_array_equal(gi, ei)
            np.testing.assert_array_equal(gy, ey)
        # and through the pipeline itself, against the label map applied in NumPy
        ys = [y[0] for _, y in kd.make_eval_dataset(spec, 1, size=None).as_numpy_iterator()]
        for y, (_, ey) in zip(ys, expected[spec.name], strict=True):
            np.testing.assert_array_equal(y, ey.astype(np.int32))


def _png_bytes(arr, mode=None, palette=False, **save):
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    if palette:
        im.putpalette(L.palette_flat(L.CITYSCAPES_LABEL_ID_PALETTE))
    buf = pyio.BytesIO()
    im.save(buf, "PNG", **save)
    return buf.getvalue()


def _variants():
    idx = np.random.default_rng(0).integers(0, 256, (5, 7)).astype(np.uint8)
    rgb3 = rgb(1, 5, 7)
    return {  # name -> (bytes, goes through Python)
        "palette": (_png_bytes(idx, "P", True), False),
        "palette_trns_gamma": (_png_bytes(idx, "P", True, transparency=0, gamma=0.45), False),
        "grey": (_png_bytes(idx, "L"), False),
        "grey_trns": (_png_bytes(idx, "L", transparency=3), False),
        "rgb": (_png_bytes(rgb3), False),
        "rgba": (_png_bytes(np.dstack([rgb3, idx])), False),
        "grey_alpha": (_png_bytes(np.dstack([idx, idx[::-1]]), "LA"), False),
        "palette_4bit": (_png_bytes((idx % 16), "P", True, bits=4), True),
        "grey16": (_png_bytes(idx.astype(np.uint16) * 3), True),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_png8_label_variants_equal_pillow(tmp_path, monkeypatch, name):
    data, python = _variants()[name]
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    lut = np.arange(256, dtype=np.uint8)[::-1].copy()  # an injective map shows every raw value
    expected = dio.read_label(str(path), "png8", lut)
    calls = []
    real = dio.read_label

    def counting(*a):
        calls.append(a)
        return real(*a)

    monkeypatch.setattr(dio, "read_label", counting)
    got = tf.function(lambda p: dio.decode_label_in_graph(p, "png8", lut))(tf.constant(str(path))).numpy()
    np.testing.assert_array_equal(got, expected)
    assert bool(calls) == python


def test_incomplete_files_fall_back_and_name_the_file(tmp_path):
    make_gta5(str(tmp_path), n=2)
    spec = kd.gta5(str(tmp_path))
    path = tmp_path / "labels" / "00002.png"
    path.write_bytes(path.read_bytes()[:70])  # no IEND: the Python reader raises, naming it
    with pytest.raises(tf.errors.OpError, match=r"00002\.png"):
        list(kd.make_eval_dataset(spec, 1).as_numpy_iterator())
