"""The task registry: one :class:`Task` record per adaptation task.

A record says which dataset feeds each split, which class sets the task trains with, and which
means it reports; its values (sizes, class count, default backbone) live in the YAML file it names
under ``configs/tasks/``. Adding a task is one record here plus one YAML file. This module imports
no backend, so the command line can list tasks without loading Keras.

Example:
>>> TASKS["synthia2cs"].class_names(16)[:3]
('road', 'sidewalk', 'building')
"""

from __future__ import annotations

import dataclasses
import os

from keras_fada.data import labels as L

# Class names of each class count a task can train with (19 Cityscapes, 16 SYNTHIA, 13 Cross-City).
CLASS_SETS: dict[int, tuple[str, ...]] = {
    19: L.CITYSCAPES_19_CLASSES,
    16: L.SYNTHIA_16_CLASSES,
    13: L.CROSSCITY_13_CLASSES,
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One source -> target task.

    Attributes:
        name: the ``--task`` name.
        config: the values file, ``configs/tasks/<config>.yaml``.
        source: the labelled source dataset (``gta5``, ``synthia``, ``cityscapes``, ``synthetic``).
        target: the target dataset (``cityscapes``, ``crosscity``, ``synthetic``).
        city: the Cross-City city of a ``crosscity`` target.
        num_classes: the class counts the task can train with (the YAML file picks one).
        means: ``(key, num_classes, class ids)`` of each reported mean; ``None`` = every class.
            The ``miou`` entry also selects the classes whose IoU is shown.
    """

    name: str
    config: str
    source: str
    target: str
    num_classes: tuple[int, ...]
    city: str | None = None
    means: tuple[tuple[str, int, tuple[int, ...] | None], ...] = ()

    def class_names(self, num_classes: int) -> tuple[str, ...]:
        return CLASS_SETS[num_classes]

    def reported_means(self, num_classes: int) -> dict[str, tuple[int, ...]]:
        """``{key: class ids}`` of the means reported at ``num_classes`` (``miou`` first)."""
        out = {
            key: tuple(range(num_classes)) if ids is None else ids
            for key, k, ids in self.means
            if k == num_classes
        }
        return out if "miou" in out else {"miou": tuple(range(num_classes)), **out}


def _crosscity(city: str) -> Task:
    return Task(
        f"cs2{city.lower()}",
        "crosscity",
        source="cityscapes",
        target="crosscity",
        city=city,
        num_classes=(19, 13),
        means=(("miou", 19, L.CLASSES_13_TRAIN_IDS_19),),
    )


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("gta2cs", "gta2cs", source="gta5", target="cityscapes", num_classes=(19,)),
        Task(
            "synthia2cs",
            "synthia2cs",
            source="synthia",
            target="cityscapes",
            num_classes=(16,),
            means=(("miou13", 16, L.CLASSES_13_IDS_16),),
        ),
        *(_crosscity(city) for city in L.CROSSCITY_CITIES),
        Task("synthetic", "synthetic", source="synthetic", target="synthetic", num_classes=(19,)),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    from keras_fada.config import ConfigError

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}")
    return TASKS[name]


# ------------------------------------------------------------------------------------ datasets
# Folder of each dataset below --data-root, and how each split is built from it.
DATA_FOLDERS = {
    "gta5": "gta5",
    "synthia": "synthia",
    "cityscapes": "cityscapes",
    "crosscity": "NTHU_Datasets",
    "synthetic": "synthetic",
}


SPLITS = ("source_train", "target_train", "target_val")


def task_specs(cfg: dict) -> dict:
    """The ``DatasetSpec`` of each split of the config's task: ``source_train``, ``target_train``
    (images only are used) and ``target_val``; ``data.lists.<split>`` selects a split's list file."""
    lists = {k: v for k, v in (cfg["data"].get("lists") or {}).items() if v is not None}
    for split, path in lists.items():  # checked before any data is listed or generated
        if not isinstance(path, str) or not os.path.isfile(path):
            from keras_fada.config import ConfigError

            raise ConfigError(
                f"config key 'data.lists.{split}' is {path!r}; expected an existing list file "
                "(one image per line, relative to the image folder)"
            )
    try:
        specs = _task_specs(cfg)
    except ValueError as e:  # a builder's plain ValueError is a data mistake: one line, not a traceback
        from keras_fada.data.datasets import DatasetError

        if isinstance(e, DatasetError) or type(e).__name__ in ("ConfigError", "RunError"):
            raise
        raise DatasetError(f"task {cfg['task']!r}: {' '.join(str(e).split())}") from None
    for split, path in lists.items():
        specs[split] = specs[split].replace(list_file=os.path.abspath(path))
    return specs


def _task_specs(cfg: dict) -> dict:
    from keras_fada import data as kd

    task = get_task(cfg["task"])
    root, k = cfg["data"]["root"], int(cfg["num_classes"])
    src_size, tgt_size = tuple(cfg["data"]["source_size"]), tuple(cfg["data"]["target_size"])
    folder = {name: os.path.join(root, sub) for name, sub in DATA_FOLDERS.items()}
    if task.source == "synthetic":
        specs = kd.synthetic_specs(folder["synthetic"], **cfg["data"]["synthetic"])
        return {s: specs[s] for s in ("source_train", "target_train", "target_val")}
    source = {
        "gta5": lambda: kd.gta5(folder["gta5"], train_size=src_size),
        "synthia": lambda: kd.synthia(folder["synthia"], train_size=src_size),
        "cityscapes": lambda: kd.cityscapes(folder["cityscapes"], "train", k, train_size=src_size),
    }[task.source]()
    if task.target == "crosscity":
        target_train = kd.crosscity(folder["crosscity"], task.city, "train", k, train_size=tgt_size)
        target_val = kd.crosscity(folder["crosscity"], task.city, "test", k)
    else:
        target_train = kd.cityscapes(folder["cityscapes"], "train", k, labelled=False, train_size=tgt_size)
        target_val = kd.cityscapes(folder["cityscapes"], "val", k)
    return {"source_train": source, "target_train": target_train, "target_val": target_val}


# ------------------------------------------------------------------------------------ scores
def reported_scores(task_name: str, confusion) -> dict:
    """Per-class IoU (%) of the shown classes and the task's means (``miou``, SYNTHIA's ``miou13``),
    from a K x K confusion matrix."""
    from keras_fada import metrics

    task, k = get_task(task_name), confusion.shape[0]
    iou = metrics.iou_per_class(confusion) * 100
    names = task.class_names(k)
    means = task.reported_means(k)
    shown = list(means["miou"])
    out = {"iou": {names[i]: round(float(iou[i]), 2) for i in shown}}
    for key, ids in means.items():
        out[key] = round(float(iou[list(ids)].mean()), 2)
    out["num_classes_reported"] = len(shown)
    return out
