"""The tf.data input pipeline: batch structure, jitter, scale-crop-flip, evaluation sizes, model.fit.
Runs on every Keras backend (the pipeline itself is tf.data)."""

import keras
import numpy as np
import tensorflow as tf

from keras_fada import data as kd
from tests.support.data_trees import H, W, make_cityscapes, make_gta5


# ---------------------------------------------------------------- pipeline
def test_adaptation_batches_structure_jitter_and_seed(tmp_path):
    make_gta5(str(tmp_path / "gta"), n=4, h=10, w=16)
    make_cityscapes(str(tmp_path / "cs"), "train")
    src = kd.gta5(str(tmp_path / "gta"), train_size=(6, 10))
    tgt = kd.cityscapes(str(tmp_path / "cs"), "train", train_size=(4, 8))
    ds = kd.make_adaptation_dataset(src, tgt, 2, seed=5)
    b = next(iter(ds))
    assert set(b) == {"source_images", "source_labels", "target_images"}
    assert b["source_images"].shape == (2, 6, 10, 3) and b["source_images"].dtype == tf.float32
    assert b["source_labels"].shape == (2, 6, 10) and b["source_labels"].dtype == tf.int32
    assert b["target_images"].shape == (2, 4, 8, 3) and b["target_images"].dtype == tf.float32
    # reproducible
    b2 = next(iter(kd.make_adaptation_dataset(src, tgt, 2, seed=5)))
    for k in b:
        np.testing.assert_array_equal(b[k].numpy(), b2[k].numpy())
    # jitter on the source only: without jitter the target batch is identical, the source is not
    plain = next(iter(kd.make_adaptation_dataset(src, tgt, 2, seed=5, jitter=False)))
    np.testing.assert_array_equal(plain["target_images"].numpy(), b["target_images"].numpy())
    np.testing.assert_array_equal(plain["source_labels"].numpy(), b["source_labels"].numpy())
    assert np.abs(plain["source_images"].numpy() - b["source_images"].numpy()).max() > 1.0
    x = b["source_images"].numpy()
    assert 0.0 <= x.min() and x.max() <= 255.0
    # every backend takes the batch as NumPy
    conv = keras.tree.map_structure(lambda t: keras.ops.convert_to_tensor(np.asarray(t)), b)
    assert keras.ops.shape(conv["source_labels"]) == (2, 6, 10)


def test_color_jitter_matches_torchvision_semantics():
    img = tf.constant(np.random.default_rng(0).uniform(0, 255, (5, 7, 3)).astype(np.float32))
    seed = tf.constant([1, 2], tf.int64)
    same = kd.color_jitter(img, seed, (0, 0, 0, 0))
    np.testing.assert_allclose(same.numpy(), img.numpy(), atol=1e-3)
    out = kd.color_jitter(img, seed, (0.5, 0.0, 0.0, 0.0)).numpy()  # brightness only: one factor
    ratio = out / np.maximum(img.numpy(), 1e-3)
    ok = out < 254.9
    assert 0.5 <= np.median(ratio[ok]) <= 1.5 and np.allclose(ratio[ok], np.median(ratio[ok]), atol=1e-3)
    np.testing.assert_array_equal(kd.color_jitter(img, seed).numpy(), kd.color_jitter(img, seed).numpy())


def test_scale_crop_pads_labels_with_255_and_images_with_0():
    img = tf.fill([4, 6, 3], 100.0)
    lbl = tf.fill([4, 6], tf.constant(3, tf.uint8))
    x, y = kd.random_scale_crop_flip(img, lbl, tf.constant([0, 1], tf.int64), (1.0, 1.0), (8, 10), 0.0)
    x, y = x.numpy(), y.numpy()
    assert x.shape == (8, 10, 3) and y.shape == (8, 10)
    assert (y == 255).sum() == 8 * 10 - 4 * 6 and (y == 3).sum() == 24
    assert (x[y == 255] == 0).all() and np.allclose(x[y == 3], 100.0)


def test_self_distillation_dataset(tmp_path):
    make_cityscapes(str(tmp_path), "train")
    spec = kd.cityscapes(str(tmp_path), "train")
    ds = kd.make_self_distillation_dataset(spec, 2, crop_size=(10, 14), scale_range=(0.5, 1.5), seed=0)
    batches = [b for b in ds.take(6)]
    for x, y in batches:
        assert x.shape == (2, 10, 14, 3) and y.shape == (2, 10, 14) and y.dtype == tf.int32
    assert any((y.numpy() == 255).any() for _, y in batches)  # small scales need padding


def test_eval_keeps_full_resolution_labels(tmp_path):
    make_cityscapes(str(tmp_path), "val")
    spec = kd.cityscapes(str(tmp_path), "val", eval_size=(4, 6))
    x, y = next(iter(kd.make_eval_dataset(spec, 2)))
    assert x.shape == (2, 4, 6, 3) and y.shape == (2, H, W) and y.dtype == tf.int32


def test_supervised_dataset_in_model_fit(tmp_path):
    make_gta5(str(tmp_path))
    spec = kd.gta5(str(tmp_path), train_size=(8, 8))
    ds = kd.make_supervised_dataset(spec, 2, jitter=True, flip_prob=0.5, seed=0)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(19, 1)(keras.layers.Rescaling(1 / 255.0)(inputs)))
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    )
    hist = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_supervised_dataset_without_resize_gives_labels_at_the_image_size(tmp_path):
    # was: size=None yielded the image at its size and the label at its own (96x192 vs 48x96)
    from PIL import Image

    from tests.support.data_trees import rgb

    raws = make_gta5(str(tmp_path), n=2)
    for i in range(2):  # images twice the size of their labels
        Image.fromarray(rgb(i, 2 * H, 2 * W)).save(tmp_path / "images" / f"{i + 1:05d}.png")
    spec = kd.gta5(str(tmp_path))
    ds = kd.make_supervised_dataset(spec, 2, size=None, shuffle=False, repeat=False)
    images, labels = next(iter(ds))
    assert images.shape == (2, 2 * H, 2 * W, 3) and labels.shape == (2, 2 * H, 2 * W)
    lut = np.full(256, 255, np.int64)  # Cityscapes label id -> train id, independent of the package
    for label_id, train_id in zip(
        (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33), range(19), strict=True
    ):
        lut[label_id] = train_id
    for raw, got in zip(raws, labels.numpy(), strict=True):
        nearest = raw[np.arange(2 * H)[:, None] // 2, np.arange(2 * W)[None, :] // 2]  # 2x nearest
        np.testing.assert_array_equal(got, lut[nearest])
