"""Datasets and the ``tf.data`` input pipeline of keras-fada.

One mechanism, varied data: :mod:`~keras_fada.data.datasets` describes each dataset as a
:class:`DatasetSpec` (GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes, NTHU Cross-City, and the built-in
synthetic pair, which is written in the GTA5 and Cityscapes layouts), :mod:`~keras_fada.data.labels`
holds every label map, and :mod:`~keras_fada.data.pipeline` builds the batches.
"""

from keras_fada._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    ["labels"],
    {
        ".datasets": ["DatasetError", "DatasetSpec", "cityscapes", "crosscity", "find_size_mismatches"]
        + ["gta5", "synthia"],
        ".io": ["read_image", "read_label", "read_raw_label"],
        ".pipeline": ["OFFICIAL_JITTER", "balanced_indices", "color_jitter", "make_adaptation_dataset"]
        + ["make_eval_dataset", "make_inference_dataset", "make_self_distillation_dataset"]
        + ["make_supervised_dataset", "random_scale_crop_flip", "resize_image", "resize_label"],
        ".sampling": ["ClassBalancedSampler", "class_presence", "class_presence_cache_path"],
        ".synthetic": ["ensure_synthetic_pair", "synthetic_specs"],
    },
)
