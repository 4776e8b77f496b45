"""keras-fada: FADA (Wang et al., ECCV 2020) in Keras 3, on TensorFlow, JAX and PyTorch.

Attributes load on first use, so importing the package (or running ``keras-fada --help``) loads no
backend.
"""

from keras_fada._lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = attach(
    __name__,
    ["callbacks", "config", "data", "evaluation", "layers", "losses", "metrics", "models", "ops"]
    + ["optimizers", "training"],
    {
        ".models.fada": ["FADA", "SegmentationTrainer"],
        ".layers": ["DomainEncoder", "FineGrainedDiscriminator"],
    },
)
