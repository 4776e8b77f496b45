"""Datasets and the ``tf.data`` input pipeline of keras-fada.

One mechanism, varied data: :mod:`~keras_fada.data.datasets` describes each dataset as a
:class:`DatasetSpec` (GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes, NTHU Cross-City, and the built-in
synthetic pair, which is written in the GTA5 and Cityscapes layouts), :mod:`~keras_fada.data.labels`
holds every label map, and :mod:`~keras_fada.data.pipeline` builds the batches.
"""

from keras_fada.data import labels
from keras_fada.data.datasets import (
    DatasetError,
    DatasetSpec,
    cityscapes,
    crosscity,
    find_size_mismatches,
    gta5,
    synthia,
)
from keras_fada.data.io import read_image, read_label, read_raw_label
from keras_fada.data.pipeline import (
    OFFICIAL_JITTER,
    balanced_indices,
    color_jitter,
    make_adaptation_dataset,
    make_eval_dataset,
    make_inference_dataset,
    make_self_distillation_dataset,
    make_supervised_dataset,
    random_scale_crop_flip,
    resize_image,
    resize_label,
)
from keras_fada.data.sampling import ClassBalancedSampler, class_presence, class_presence_cache_path
from keras_fada.data.synthetic import ensure_synthetic_pair, synthetic_specs

__all__ = [
    "OFFICIAL_JITTER",
    "ClassBalancedSampler",
    "DatasetError",
    "DatasetSpec",
    "balanced_indices",
    "cityscapes",
    "class_presence",
    "class_presence_cache_path",
    "color_jitter",
    "crosscity",
    "ensure_synthetic_pair",
    "find_size_mismatches",
    "gta5",
    "labels",
    "make_adaptation_dataset",
    "make_eval_dataset",
    "make_inference_dataset",
    "make_self_distillation_dataset",
    "make_supervised_dataset",
    "random_scale_crop_flip",
    "read_image",
    "read_label",
    "read_raw_label",
    "resize_image",
    "resize_label",
    "synthetic_specs",
    "synthia",
]
