"""The teacher's pseudo labels: one palette PNG per target image, at that image's own size."""

import os

import numpy as np
from PIL import Image

from keras_fada import data as kd
from keras_fada.training.pseudo_labels import write_pseudo_labels
from tests.support import numpy_reference as ref
from tests.support.data_trees import make_crosscity, rgb, save_jpg
from tests.support.fada_fixtures import tiny_segmentor


def test_pseudo_labels_for_jpeg_targets_are_written_at_each_images_size(tmp_path):
    # was: the size probe read PNG headers only, so JPEG targets got labels at the teacher's size
    make_crosscity(str(tmp_path), "Rome", n_train=2, n_test=1, train_ext=".jpg")
    save_jpg(str(tmp_path / "Rome" / "Images" / "Train" / "pano_00002_0_0.jpg"), rgb(5, 10, 18))
    spec = kd.crosscity(str(tmp_path), "Rome", "train")
    seg = tiny_segmentor(19)
    out = tmp_path / "pseudo"
    assert write_pseudo_labels(seg, spec, str(out), size=(8, 12), batch_size=3, verbose=False) == 3
    images = next(kd.make_inference_dataset(spec, 3, size=(8, 12)).as_numpy_iterator())[0]
    logits = np.asarray(seg.predict_on_batch(images))
    for i, (stem, size) in enumerate([("pano_00000_0_0", (8, 12)), ("pano_00001_0_0", (8, 12)),
                                      ("pano_00002_0_0", (10, 18))]):  # fmt: skip
        with Image.open(out / f"{stem}.png") as im:
            assert im.mode == "P" and (im.height, im.width) == size
            got = np.asarray(im)
        expected = ref.resize_align_corners(logits[i : i + 1], *size)[0].argmax(-1)
        assert (got == expected).mean() > 0.99
    assert sorted(os.listdir(out)) == [f"pano_0000{i}_0_0.png" for i in range(3)]


def test_pseudo_labelling_shows_a_progress_bar_unless_quiet(tmp_path, capsys):
    make_crosscity(str(tmp_path), "Rome", n_train=3, n_test=1)
    spec = kd.crosscity(str(tmp_path), "Rome", "train")
    seg = tiny_segmentor(19)
    write_pseudo_labels(seg, spec, str(tmp_path / "a"), size=(8, 12), batch_size=2, verbose=True)
    shown = capsys.readouterr().out
    assert "3/3" in shown and "images/s" in shown and "wrote 3 pseudo labels" in shown
    write_pseudo_labels(seg, spec, str(tmp_path / "b"), size=(8, 12), batch_size=2, verbose=False)
    assert capsys.readouterr().out == ""
