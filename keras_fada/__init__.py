"""keras-fada: FADA (Wang et al., ECCV 2020) in Keras 3, on TensorFlow, JAX and PyTorch."""

from keras_fada import callbacks, evaluation, layers, losses, metrics, ops, optimizers
from keras_fada.layers import DomainEncoder, FineGrainedDiscriminator
from keras_fada.models.fada import FADA, SegmentationTrainer

__version__ = "0.1.0"

__all__ = [
    "FADA",
    "DomainEncoder",
    "FineGrainedDiscriminator",
    "SegmentationTrainer",
    "callbacks",
    "evaluation",
    "layers",
    "losses",
    "metrics",
    "ops",
    "optimizers",
]
