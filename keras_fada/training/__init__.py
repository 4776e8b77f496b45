"""The run machinery behind ``keras-fada train``, one job per module:

- :mod:`~keras_fada.training.tasks`: the task registry (datasets per split, classes, reported means);
- :mod:`~keras_fada.training.build`: networks, FADA and optimisers from a resolved config;
- :mod:`~keras_fada.training.pseudo_labels`: the teacher's labels for self-distillation;
- :mod:`~keras_fada.training.checkpoint`: atomic backups a killed run resumes from exactly;
- :mod:`~keras_fada.training.run_dir`: what a run directory holds and which checkpoint a stage needs;
- :mod:`~keras_fada.training.stages`: the stage runner (source-only -> FADA -> self-distillation).

Example:
>>> from keras_fada.config import load_config
>>> from keras_fada.training.stages import run_stages
>>> summary = run_stages(load_config("synthetic"), ["source", "adapt"], "runs/synthetic")
>>> summary["gain_over_source_only"]["adapt"]
"""


class RunError(ValueError):
    """A user mistake found while running (missing or mismatched checkpoint, finished run, ...)."""
