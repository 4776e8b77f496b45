"""Run configurations: YAML files with ``_base_`` includes, merged with dotted ``KEY=VALUE`` overrides.

``configs/base.yaml`` lists every key with the official value; ``configs/<task>/task.yaml`` sets the
task's values and ``configs/<task>/<stage>_<backbone>.yaml`` those of one stage (each file includes the
one above it with ``_base_: <path relative to the file>``). :func:`load_config` merges, in order, the
files of the requested stages, an optional user file, and the overrides; any key that ``base.yaml``
does not define is an error naming it and the valid keys.

Example:
>>> cfg = load_config("synthetic", overrides=["encoder.mode=binary", "lambda_adv=0.01"])
>>> cfg["encoder"]["mode"], cfg["lambda_adv"]
('binary', 0.01)
"""

from __future__ import annotations

import copy
import os

import yaml

TASKS = ("gta2cs", "synthia2cs", "cs2rome", "cs2rio", "cs2tokyo", "cs2taipei", "synthetic")
STAGES = ("source", "adapt", "distill")
BACKBONES = ("resnet101", "vgg16", "small")


# Keys whose values come from a fixed set: a typo is an error naming the valid values.
CHOICES = {
    "precision": ("float32", "mixed_bfloat16"),
    "encoder.mode": ("soft", "hard", "binary"),
    "discriminator.resolution": ("label", "feature"),
}


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
    return read_yaml(os.path.join(config_dir(), "base.yaml"))


def task_file(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return os.path.join(config_dir(), task, "task.yaml")


def stage_file(task: str, stage: str, backbone: str) -> str:
    path = os.path.join(config_dir(), task, f"{stage}_{backbone}.yaml")
    if not os.path.isfile(path):
        have = sorted(
            f[: -len(".yaml")].split("_", 1)[1]
            for f in os.listdir(os.path.dirname(path))
            if f.startswith(f"{stage}_") and f.endswith(".yaml")
        )
        raise ConfigError(
            f"no {stage} config for task {task!r} with backbone {backbone!r} ({path}); "
            f"backbones with configs: {', '.join(have)} (or pass --config FILE)"
        )
    return path


def load_config(
    task: str,
    backbone: str | None = None,
    stages=STAGES,
    config_file: str | None = None,
    overrides=(),
    base: dict | None = None,
) -> dict:
    """The resolved configuration of ``task``: defaults < stage files < ``config_file`` < overrides.

    Args:
        task: one of :data:`TASKS`.
        backbone: ``resnet101`` / ``vgg16`` / ``small``; default: the task's.
        stages: the stages whose files are merged.
        config_file: an extra YAML file (may ``_base_``-include others), merged on top.
        overrides: ``"dotted.key=value"`` strings, merged last.
        base: start from this resolved config instead of the files (``--resume``).
    """
    sch = schema()
    if base is None:
        defaults = read_yaml(task_file(task))
        validate(defaults, sch, task_file(task))
        backbone = backbone or defaults.get("backbone", "resnet101")
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; backbones: {', '.join(BACKBONES)}")
        config = merge(sch, defaults)
        for stage in stages:
            # Each stage file includes the task file; only its own stage section (and the
            # backbone) is taken from it, so that the files of other stages keep theirs.
            small_fallback = backbone == "small" and not os.path.isfile(
                os.path.join(config_dir(), task, f"{stage}_small.yaml")
            )  # the small CPU network runs any task with its ResNet-101 recipe
            path = stage_file(task, stage, "resnet101" if small_fallback else backbone)
            data = read_yaml(path)
            validate(data, sch, path)
            if small_fallback:
                data["backbone"] = "small"
            config = merge(config, {k: v for k, v in data.items() if k not in STAGES or k == stage})
            config[stage] = merge(sch[stage], data.get(stage, {}))
    else:
        config = copy.deepcopy(base)
        if config.get("task") != task:
            raise ConfigError(f"the run was made for task {config.get('task')!r}, not {task!r}")
        if backbone and backbone != config.get("backbone"):
            raise ConfigError(f"the run uses backbone {config.get('backbone')!r}, not {backbone!r}")
    if config_file:
        data = read_yaml(config_file)
        validate(data, sch, config_file)
        config = merge(config, data)
    for item in overrides:
        data = parse_override(item)
        validate(data, sch, f"override {item!r}")
        config = merge(config, data)
    if config["task"] != task:
        raise ConfigError(f"config sets task {config['task']!r} but --task is {task!r}")
    if config["backbone"] not in BACKBONES:
        raise ConfigError(f"unknown backbone {config['backbone']!r}; backbones: {', '.join(BACKBONES)}")
    for name, valid in CHOICES.items():
        section, _, key = name.rpartition(".")
        value = (config[section] if section else config)[key]
        if value not in valid:
            raise ConfigError(f"config key {name!r} is {value!r}; valid values: {', '.join(valid)}")
    return config


def dump(config: dict, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)
