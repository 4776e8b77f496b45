"""Run configurations, composed from YAML files along three axes and dotted ``KEY=VALUE`` overrides.

``configs/defaults.yaml`` lists every key with the official value (and is the list of valid keys);
``configs/backbones/<backbone>.yaml`` holds the stage recipes that depend on the network;
``configs/tasks/<file>.yaml`` a task's datasets, sizes and classes (the file a task record in
:mod:`keras_fada.training.tasks` names). :func:`load_config` merges, in order, defaults < backbone <
task < an optional user file < overrides; any key that ``defaults.yaml`` does not define is an error
naming it and the valid keys. A file may include others with ``_base_: <path relative to it>``.

Example:
>>> cfg = load_config("synthetic", overrides=["encoder.mode=binary", "lambda_adv=0.01"])
>>> cfg["encoder"]["mode"], cfg["lambda_adv"]
('binary', 0.01)
"""

from __future__ import annotations

import copy
import os

import yaml

STAGES = ("source", "adapt", "distill")


# Keys whose values come from a fixed set: a typo is an error naming the valid values.
CHOICES = {
    "precision": ("float32", "mixed_bfloat16", "mixed_float16"),
    "encoder.mode": ("soft", "hard", "binary"),
    "discriminator.resolution": ("label", "feature"),
    "eval.scale_resize": ("official", "half_pixel"),
}


# Ranges of the numeric keys (``*`` matches a section): each value (and each number of a list) must
# hold; the text says what is expected. The type of every key is the type of its value in
# defaults.yaml (an int where the default is an int, a number where it is a float, a list of as many
# numbers where it is a list, a string or null where it is null).
_POS, _NONNEG, _ONE, _UNIT = (
    (lambda v: v > 0, "> 0"),
    (lambda v: v >= 0, ">= 0"),
    (lambda v: v >= 1, ">= 1"),
    (lambda v: 0 <= v <= 1, "in [0, 1]"),
)
RANGES = {
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "data.source_size": _ONE,
    "data.target_size": _ONE,
    "data.synthetic.*": _ONE,
    "optim.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optim.weight_decay": _NONNEG,
    "optim.power": _NONNEG,
    "optim.classifier_lr_multiplier": _POS,
    "optim.adam_betas": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lambda_adv": _NONNEG,
    "source_temperature": _POS,
    "encoder.temperature": _POS,
    "encoder.clip": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "encoder.threshold": _UNIT,
    "discriminator.width": (lambda v: v >= 2, ">= 2"),
    "discriminator.weights": _NONNEG,
    "*.base_lr": _POS,
    "*.base_lr_d": _POS,
    "*.max_iter": _ONE,
    "*.steps": _ONE,
    "*.batch_size": _ONE,
    "*.checkpoint_period": _ONE,
    "*.eval_size": _ONE,
    "*.crop_size": _ONE,
    "*.teacher_size": _ONE,
    "distill.scale_range": _POS,
    "distill.flip_prob": _UNIT,
    "eval.scales": _POS,
    "eval.period": _NONNEG,
    "keep_snapshots": (lambda v: v >= -1, ">= -1 (-1 keeps all)"),
}
# Lists whose length is free (any other list has the length of its default).
FREE_LENGTH = ("eval.scales",)


class ConfigError(ValueError):
    """A configuration mistake by the user (unknown task, key, file or value)."""


def config_dir() -> str:
    """The ``configs/`` folder: ``$KERAS_FADA_CONFIGS``, else the one installed with the package
    (the repository's ``configs/`` installs as ``keras_fada.configs``)."""
    env = os.environ.get("KERAS_FADA_CONFIGS")
    if env:
        return env
    from keras_fada import configs

    return os.path.dirname(os.path.abspath(configs.__file__))


def read_yaml(path: str) -> dict:
    """One YAML file with its ``_base_`` chain resolved (the file's values win)."""
    return _read(os.path.abspath(path), ())


def _read(path, seen):
    if path in seen:
        raise ConfigError(f"config {path!r} includes itself through _base_")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping, not {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is None:
        return data
    bases = base if isinstance(base, list) else [base]
    merged = {}
    for b in bases:
        merged = merge(merged, _read(os.path.normpath(os.path.join(os.path.dirname(path), b)), (*seen, path)))
    return merge(merged, data)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins, mappings are merged key by key."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _keys(schema, prefix=""):
    for k, v in schema.items():
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def validate(config: dict, schema: dict, origin: str, prefix: str = "") -> None:
    """Every key of ``config`` must exist in ``schema`` (mappings where the schema has mappings)."""
    for k, v in config.items():
        name = f"{prefix}{k}"
        if k not in schema:
            valid = ", ".join(_keys(schema, prefix)) if prefix else ", ".join(_keys(schema))
            raise ConfigError(f"unknown config key {name!r} in {origin}; valid keys: {valid}")
        if isinstance(schema[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(
                    f"config key {name!r} in {origin} is a section; set one of: {', '.join(_keys(schema[k], name + '.'))}"
                )
            validate(v, schema[k], origin, f"{name}.")
        elif isinstance(v, dict):
            raise ConfigError(f"config key {name!r} in {origin} takes a value, not a mapping")


def parse_override(item: str) -> dict:
    """``"a.b=1e-3"`` -> ``{"a": {"b": 0.001}}``; values are YAML scalars / flow lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. lambda_adv=0.01, encoder.mode=binary)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; accept it as a number
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def schema() -> dict:
    return read_yaml(os.path.join(config_dir(), "defaults.yaml"))


def backbones() -> tuple[str, ...]:
    """The backbones: one recipe file each in ``configs/backbones/``."""
    folder = os.path.join(config_dir(), "backbones")
    return tuple(sorted(f[: -len(".yaml")] for f in os.listdir(folder) if f.endswith(".yaml")))


def backbone_file(backbone: str) -> str:
    if backbone not in backbones():
        raise ConfigError(f"unknown backbone {backbone!r}; backbones: {', '.join(backbones())}")
    return os.path.join(config_dir(), "backbones", f"{backbone}.yaml")


def task_file(task: str) -> str:
    from keras_fada.training.tasks import get_task

    return os.path.join(config_dir(), "tasks", f"{get_task(task).config}.yaml")


def _checked(path: str, sch: dict) -> dict:
    data = read_yaml(path)
    validate(data, sch, path)
    return data


def load_config(
    task: str,
    backbone: str | None = None,
    config_file: str | None = None,
    overrides=(),
    base: dict | None = None,
) -> dict:
    """The resolved configuration of ``task``: defaults < backbone < task < ``config_file`` < overrides.

    Args:
        task: a task name (:data:`keras_fada.training.tasks.TASKS`).
        backbone: a file in ``configs/backbones/``; default: the task file's ``backbone``.
        config_file: an extra YAML file (may ``_base_``-include others), merged on top; a backbone
            file mixes its recipe into any task this way.
        overrides: ``"dotted.key=value"`` strings, merged last.
        base: start from this resolved config instead of the files (``--resume``).
    """
    sch = schema()
    if base is None:
        task_values = _checked(task_file(task), sch)
        backbone = backbone or task_values.get("backbone", sch["backbone"])
        config = merge(sch, _checked(backbone_file(backbone), sch))
        config = merge(config, task_values)
        config.update(task=task, backbone=backbone)
    else:
        config = merge(sch, base)  # a run made before a key existed gets its default
        if config.get("task") != task:
            raise ConfigError(f"the run was made for task {config.get('task')!r}, not {task!r}")
        if backbone and backbone != config.get("backbone"):
            raise ConfigError(f"the run uses backbone {config.get('backbone')!r}, not {backbone!r}")
    if config_file:
        config = merge(config, _checked(config_file, sch))
    for item in overrides:
        data = parse_override(item)
        validate(data, sch, f"override {item!r}")
        config = merge(config, data)
    if config["task"] != task:
        raise ConfigError(f"config sets task {config['task']!r} but --task is {task!r}")
    backbone_file(config["backbone"])
    for name, valid in CHOICES.items():
        section, _, key = name.rpartition(".")
        value = (config[section] if section else config)[key]
        if value not in valid:
            raise ConfigError(f"config key {name!r} is {value!r}; valid values: {', '.join(valid)}")
    check_values(config, sch)
    from keras_fada.training.tasks import get_task

    allowed = get_task(task).num_classes
    if config["num_classes"] not in allowed:
        raise ConfigError(
            f"config key 'num_classes' is {config['num_classes']!r}; task {task!r} trains with "
            f"{' or '.join(map(str, allowed))} classes"
        )
    return config


def _type_of(default):
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(default, int):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if isinstance(default, float):
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number"
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), "a string"
    return (lambda v: v is None or isinstance(v, str)), "a path or null"


def check_values(config: dict, schema: dict, prefix: str = "") -> None:
    """Every value has its default's type (lists: as many items, each of the item type) and lies
    in its range (:data:`RANGES`); a mistake is one :class:`ConfigError` naming key, value and
    what was expected."""
    import fnmatch

    for key, default in schema.items():
        name, value = f"{prefix}{key}", config.get(key)
        if isinstance(default, dict):
            check_values(value, default, f"{name}.")
            continue
        rng = next((r for pat, r in RANGES.items() if fnmatch.fnmatchcase(name, pat)), None)
        if isinstance(default, list):
            is_item, what = _type_of(default[0]) if default else ((lambda v: True), "")
            n = "" if name in FREE_LENGTH else f"{len(default)} "
            expected = f"a list of {n}{what.replace('an integer', 'integers').replace('a number', 'numbers')}"
            expected += f" {rng[1]}" if rng else ""
            ok = (
                isinstance(value, list)
                and (name in FREE_LENGTH and value or len(value) == len(default))
                and all(is_item(v) and (rng is None or rng[0](v)) for v in value)
            )
        else:
            is_value, expected = _type_of(default)
            expected += f" {rng[1]}" if rng else ""
            ok = is_value(value) and (rng is None or value is None or rng[0](value))
        if not ok:
            raise ConfigError(f"config key {name!r} is {value!r}; expected {expected}")
    if isinstance(config.get("scale_range"), list) and config["scale_range"][0] > config["scale_range"][1]:
        raise ConfigError(
            f"config key '{prefix}scale_range' is {config['scale_range']!r}; expected [low, high] with low <= high"
        )


def dump(config: dict, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)
