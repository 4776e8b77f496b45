"""The FADA pipeline's training models: source-only / self-distillation and adversarial."""

from keras_fada.models.fada.fada import FADA
from keras_fada.models.fada.segmentation_trainer import SegmentationTrainer

__all__ = ["FADA", "SegmentationTrainer"]
