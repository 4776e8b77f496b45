"""FADA's building blocks as Keras layers."""

from keras_fada.layers.activation import Add, ReLU
from keras_fada.layers.convolution import Conv2D
from keras_fada.layers.discriminator import FineGrainedDiscriminator
from keras_fada.layers.domain_encoder import DomainEncoder

__all__ = ["Add", "Conv2D", "DomainEncoder", "FineGrainedDiscriminator", "ReLU"]
