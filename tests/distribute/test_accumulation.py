"""Gradient accumulation: k micro-batches give exactly the step of the k-times larger batch."""

import keras
import numpy as np
import pytest

from tests.distribute import common
from tests.support import fada_fixtures as fx


@pytest.mark.parametrize("mode", ["hard"])  # confident-pixel counts; soft: test_data_parallel
def test_two_micro_batches_equal_one_step_on_the_whole_batch(mode):
    start = fx.model_params(common.model(mode))
    want_logs, want = common.reference(mode)
    got_logs, got = common.train(common.model(mode, accumulation_steps=2))
    for key in ("seg_loss", "adv_loss", "d_loss", "loss"):
        assert got_logs[key] == pytest.approx(want_logs[key], rel=1e-5), key
    assert common.relative_difference(got, want) < 1e-5
    assert common.update_difference(got, want, start) < 1e-3


def test_accumulation_needs_a_divisible_batch():
    m = common.model("soft", accumulation_steps=3)
    with pytest.raises(ValueError, match="does not split into 1 devices x 3 micro-batches"):
        common.train(m)


def test_segmentation_trainer_accumulates_too():
    from keras_fada.models.fada import SegmentationTrainer

    b = common.batch()
    data = (b["source_images"], b["source_labels"])
    params = []
    for steps in (1, 2):
        keras.utils.set_random_seed(3)
        trainer = SegmentationTrainer(fx.tiny_segmentor(), accumulation_steps=steps)
        trainer.compile()
        trainer.fit(*data, batch_size=4, epochs=2, verbose=0, shuffle=False)
        params.append([keras.ops.convert_to_numpy(v) for v in trainer.trainable_weights])
    for a, b_ in zip(*params, strict=True):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-7)
