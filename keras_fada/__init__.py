"""keras-fada: FADA (Wang et al., ECCV 2020) in Keras 3, on TensorFlow, JAX and PyTorch."""

from keras_fada import layers, losses, ops
from keras_fada.layers import DomainEncoder, FineGrainedDiscriminator

__version__ = "0.1.0"

__all__ = ["DomainEncoder", "FineGrainedDiscriminator", "layers", "losses", "ops"]
