"""The official class-balanced source sampling: class presence cache and sampler statistics."""

import json
import os

import numpy as np
import pytest

from keras_fada import data as kd
from tests.support.data_trees import (
    rgb,
    save_palette,
    save_png,
)


# ---------------------------------------------------------------- class-balanced sampling
def _rare_class_tree(root, n=40):
    for i in range(n):
        name = f"{i + 1:05d}.png"
        save_png(os.path.join(root, "images", name), rgb(i, 4, 4))
        raw = np.full((4, 4), 7, np.uint8)  # road everywhere
        raw[0, 0] = 26 if i % 2 else 23  # car or sky in every file
        if i == 5:
            raw[1, 1] = 33  # bicycle in one file only
        save_palette(os.path.join(root, "labels", name), raw)


def test_class_presence_cached_beside_the_data(tmp_path, monkeypatch):
    _rare_class_tree(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    stats = kd.class_presence(spec)
    assert stats[5] == [0, 13, 18] and stats[1] == [0, 13] and stats[0] == [0, 10]
    cache = kd.class_presence_cache_path(spec)
    assert os.path.dirname(cache) == str(tmp_path) and os.path.isfile(cache)
    assert json.load(open(cache))["files"][0] == os.path.join("labels", "00001.png")

    def boom(*a, **k):
        raise AssertionError("labels decoded again")

    monkeypatch.setattr(kd.io, "read_label", boom)
    assert kd.class_presence(spec) == stats  # from the cache
    save_palette(str(tmp_path / "labels" / "00001.png"), np.full((4, 4), 24, np.uint8))  # changed file
    with pytest.raises(AssertionError, match="decoded again"):
        kd.class_presence(spec)


def test_class_balanced_sampler_statistics_and_seed(tmp_path):
    _rare_class_tree(str(tmp_path))
    spec = kd.gta5(str(tmp_path))
    idx = kd.balanced_indices(spec, num_samples=3000, seed=1)
    assert idx.shape == (3000,) and idx.min() >= 0 and idx.max() < 40
    rare_share = np.mean(idx == 5)
    assert rare_share > 10 * (1 / 40)  # far more often than its file frequency of 2.5 %
    np.testing.assert_array_equal(idx, kd.balanced_indices(spec, num_samples=3000, seed=1))
    assert not np.array_equal(idx, kd.balanced_indices(spec, num_samples=3000, seed=2))
    # the official weights: uniform at the start of a sub-epoch
    s = kd.ClassBalancedSampler([[0], [1], [0, 1]], 3, seed=0, sub_epoch=4)
    out = s.draw(8)
    assert out.shape == (8,) and set(out.tolist()) <= {0, 1, 2}
    ds = kd.make_supervised_dataset(spec, 2, size=(4, 4), class_balanced=True, num_samples=3000, seed=1)
    assert next(iter(ds))[1].shape == (2, 4, 4)
