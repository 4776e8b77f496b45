"""A stage that starts from a saved segmentor gets the BatchNorm kind its own config asks for: the adapted
model is saved with its BatchNorm frozen (adapt.freeze_bn), and a self-distillation student initialised from
it (distill.init=teacher) trains its BatchNorm when distill.freeze_bn is false (issue 25: the key was ignored,
the student stayed frozen)."""

import pytest

from keras_fada import config as C
from keras_fada.models.deeplabv2 import batch_norm_layers, freeze_batch_norm
from keras_fada.training import build
from keras_fada.training.checkpoint import save_model_atomic, save_weights_atomic


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_a_student_from_a_frozen_checkpoint_follows_its_freeze_bn(tmp_path, freeze_bn):
    teacher = build.build_segmentor("small", 19, freeze_bn=False)
    freeze_batch_norm(teacher)  # as the adaptation stage saves it
    path = str(tmp_path / "segmentor.weights.h5")
    save_weights_atomic(teacher, path)
    save_model_atomic(teacher, build.whole_model_path(path))
    cfg = C.load_config("synthetic", overrides=[f"distill.freeze_bn={str(freeze_bn).lower()}"])
    student = build.initial_segmentor(cfg, bool(cfg["distill"]["freeze_bn"]), init=path)
    bns = batch_norm_layers(student)
    assert bns and all(bn.trainable is not freeze_bn for bn in bns)
    assert len(student.trainable_weights) == len(teacher.trainable_weights) + (
        0 if freeze_bn else 2 * len(bns)
    )
