"""Data parallel on each backend's own engine, chosen by one switch (``devices``), and gradient
accumulation (``accumulation_steps``).

* TensorFlow: ``tf.distribute.MirroredStrategy`` over the GPUs (on a CPU-only host, over logical
  CPU devices); ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several hosts.
* JAX: ``keras.distribution.DataParallel`` (``jax.distributed.initialize()`` first when
  ``JAX_COORDINATOR_ADDRESS`` is set, one process per host).
* torch: one process per device under ``torchrun``; the split step all-reduces the gradients
  (``models/fada/torch_two_pass.py``), since Keras 3.15 has no torch distribution.

The steps normalise every loss by its count over the whole batch (``models/fada/accumulation.py``),
so N devices x k micro-batches give the step of one device on the whole batch.
"""

from __future__ import annotations

import contextlib
import os

import keras

from keras_fada.config import ConfigError


def requested(cfg) -> tuple[int | str, int]:
    """``(devices, accumulation_steps)`` of ``cfg``, checked: devices an int >= 1 or ``"all"`` (0)."""
    devices = cfg.get("devices", 1)
    if devices in (0, "0"):  # the config key is an integer: 0 means all
        devices = "all"
    if devices != "all":
        try:
            devices = int(devices)
        except (TypeError, ValueError):
            devices = 0
        if devices < 1:
            raise ConfigError(
                f"devices must be a number >= 1, or 0 / 'all' for every device, got {cfg.get('devices')!r}"
            )
    try:
        steps = int(cfg.get("accumulation_steps", 1))
    except (TypeError, ValueError):
        steps = 0
    if steps < 1:
        raise ConfigError(f"accumulation_steps must be a number >= 1, got {cfg.get('accumulation_steps')!r}")
    return devices, steps


def _torch_world():
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(cfg, stages) -> int:
    """Checks ``devices`` / ``accumulation_steps`` against the backend and the batch sizes of
    ``stages`` and prepares the engine's devices (before the backend initialises them);
    returns the number of devices. Raises ``ConfigError`` (one line) on a user mistake."""
    devices, steps = requested(cfg)
    backend = keras.backend.backend()
    if backend == "torch":
        world = _torch_world()
        if devices == "all":
            devices = world
        if devices != world:
            raise ConfigError(
                f"on torch, --devices {devices} runs one process per device under torchrun: "
                f"torchrun --nproc_per_node {devices} -m keras_fada.cli.main train ... --devices {devices}"
                f" (this process has WORLD_SIZE={world})"
            )
        if world > 1:
            _torch_init()
    elif backend == "tensorflow":
        devices = _tensorflow_devices(devices)
    elif backend == "jax":
        devices = _jax_devices(devices)
    elif devices != 1:
        raise ConfigError(f"--devices {devices} is not supported on the {backend} backend")
    for stage in stages:
        batch = int(cfg[stage]["batch_size"])
        per_domain = max(1, batch // 2) if stage == "adapt" else batch
        if per_domain % (devices * steps):
            raise ConfigError(
                f"{stage}: a batch of {per_domain} images per domain does not split into {devices} devices x "
                f"{steps} micro-batches (accumulation_steps); make {stage}.batch_size a multiple"
            )
    return devices


def _tensorflow_devices(devices):
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return devices if devices != "all" else 1  # checked per worker by the strategy
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if devices == "all":
            return len(gpus)
        if devices > len(gpus):
            raise ConfigError(f"--devices {devices}: TensorFlow sees {len(gpus)} GPU(s)")
        return devices
    if devices == "all":
        return len(tf.config.list_logical_devices("CPU"))
    if devices > 1:  # CPU only: logical CPU devices, configured before TensorFlow initialises
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * devices
            )
        except RuntimeError as e:
            if len(tf.config.list_logical_devices("CPU")) < devices:
                raise ConfigError(f"--devices {devices}: TensorFlow already initialised its CPU ({e})") from e
    return devices


def _jax_devices(devices):
    import jax

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
        jax.distributed.initialize()  # one process per host; reads JAX_NUM_PROCESSES / JAX_PROCESS_ID
    available = len(jax.devices())
    if devices == "all":
        return available
    if devices > available:
        hint = (
            f"; on CPU set XLA_FLAGS=--xla_force_host_platform_device_count={devices} before starting"
            if jax.default_backend() == "cpu"
            else ""
        )
        raise ConfigError(f"--devices {devices}: JAX sees {available} device(s){hint}")
    return devices


def _torch_init():
    import torch

    if torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def replicas() -> int:
    """How many devices the current training step is split over (1: none)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    if backend == "jax":
        distribution = keras.distribution.distribution()
        return 1 if distribution is None else len(distribution.device_mesh.devices.flatten())
    if backend == "torch":
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
    return 1


def rank() -> int:
    """This process's index among the processes of the run (torchrun, jax.distributed)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def engine(cfg):
    """The scope in which a stage builds, compiles and fits its model on ``cfg["devices"]``."""
    devices, _ = requested(cfg)
    backend = keras.backend.backend()
    if devices == 1 or backend == "torch":  # torch: the process group of setup()
        yield
        return
    if backend == "tensorflow":
        with _tensorflow_strategy(devices).scope():
            yield
        return
    import jax

    previous = keras.distribution.distribution()
    chosen = jax.devices() if devices == "all" else jax.devices()[:devices]
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=chosen))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


_STRATEGIES: dict = {}


def _tensorflow_strategy(devices):
    """One strategy per device set for the whole process: each new ``MirroredStrategy`` numbers
    its collectives from the same keys, so the second stage of a run (a new strategy, other
    all-reduce shapes) aborted with "Shape mismatch in the collective instance"."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        key = "multi-worker"
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
        return _STRATEGIES[key]
    kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    names = [d.name for d in tf.config.list_logical_devices(kind)]
    key = tuple(names if devices == "all" else names[:devices])
    if key not in _STRATEGIES:
        _STRATEGIES[key] = tf.distribute.MirroredStrategy(list(key))
    return _STRATEGIES[key]


def prepare(cfg, model, dataset):
    """Sets the model's ``accumulation_steps``; on torch under torchrun, gives each process its
    rows of every global batch (each process reads the whole batch: the batches are those of one
    device)."""
    model.accumulation_steps = requested(cfg)[1]
    world = replicas() if keras.backend.backend() == "torch" else 1
    if world == 1:
        return dataset
    import tensorflow as tf

    index = rank()

    def rows(x):
        size = tf.shape(x)[0] // world
        return x[index * size : (index + 1) * size]

    return dataset.map(lambda *batch: tf.nest.map_structure(rows, batch if len(batch) > 1 else batch[0]))
