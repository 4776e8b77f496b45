"""``keras-fada train`` as a subprocess that can be killed (SIGKILL) at chosen points, for the crash
tests and the soak script: tiny synthetic adaptation runs, single-threaded so that two runs with the
same config give the same weights bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np

TINY = [
    "data.synthetic.num_source=8",
    "data.synthetic.num_source_val=2",
    "data.synthetic.num_target_train=6",
    "data.synthetic.num_target_val=2",
    "data.synthetic.height=32",
    "data.synthetic.width=64",
    "data.source_size=[32,64]",
    "data.target_size=[32,64]",
    "adapt.eval_size=[32,64]",
    "adapt.batch_size=4",
]


def deterministic_env(backend: str, fault: str | None = None) -> dict:
    """Bit-reproducible runs: TF op determinism (without it two single-threaded 150-step TF
    adaptation runs differ by 1.2e-7, with it by 0) and one intra-op and one inter-op thread on
    every backend (multi-threaded reductions split work by the threads that are free)."""
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_DETERMINISTIC_OPS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    )
    env.pop("KERAS_FADA_FAULT", None)
    if fault:
        env["KERAS_FADA_FAULT"] = fault
    return env


def train_command(data_root, out, init, steps, period, *extra, resume=False) -> list[str]:
    return [
        sys.executable, "-m", "keras_fada.cli.main", "train", "--task", "synthetic", "--stage", "adapt",
        "--data-root", str(data_root), "--output", str(out), "--quiet", *(["--resume"] if resume else []),
        *TINY, f"adapt.steps={steps}", f"adapt.checkpoint_period={period}", f"adapt.init={init}", *extra,
    ]  # fmt: skip


def start(cmd, backend, fault=None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env=deterministic_env(backend, fault),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(cmd, backend, fault=None, timeout=300) -> tuple[int, str]:
    proc = start(cmd, backend, fault)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def weights(path) -> dict:
    """Every array of a ``.weights.h5`` file by its path inside the file."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


def max_relative_difference(a_path, b_path) -> float:
    """max |a - b| / max(|b|, 1e-12) over every array (0.0 = identical files' arrays)."""
    a, b = weights(a_path), weights(b_path)
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12))))
    return worst


def max_abs_difference(a_path, b_path) -> float:
    a, b = weights(a_path), weights(b_path)
    return max(
        (
            float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
            for k in a
            if a[k].size
        ),
        default=0.0,
    )


def initial_checkpoint(path, backbone="small", num_classes=19) -> str:
    """A random segmentor (the adaptation stage's start) saved at ``path``."""
    from keras_fada.training.build import build_segmentor

    build_segmentor(backbone, num_classes, True).save_weights(str(path))
    return str(path)
