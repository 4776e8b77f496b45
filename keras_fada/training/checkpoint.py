"""Crash-safe training checkpoints: ``keras.callbacks.BackupAndRestore`` whose backup is one atomic unit.

Keras' callback writes ``latest.weights.h5`` in place and its epoch in a second file, so a kill inside
or between the two writes leaves a backup that cannot be resumed, or one whose step is wrong.
:class:`AtomicBackupAndRestore` writes each backup as a folder ``ckpt-<step>/`` (the model's weights
with every optimiser's state, the step, the epoch, the data position and the RNG states, each file
flushed to disk) under a temporary name and renames it into place; the previous backup is deleted
only after the new one is complete, and an unreadable latest backup falls back to the one before it
with one warning line.

Example (``model.fit`` users get the same guarantees as ``keras-fada train``):
>>> backup = AtomicBackupAndRestore("runs/x/backup")
>>> step = backup.restore(model)               # 0 on a fresh start; restores weights + optimisers
>>> train = make_supervised_dataset(spec, 8, start=step)   # continue at the input position
>>> model.fit(train, epochs=10, steps_per_epoch=500, initial_epoch=step // 500, callbacks=[backup])
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import sys

import keras
import numpy as np

from keras_fada.training import RunError
from keras_fada.training import run_dir as R

WEIGHTS = "model.weights.h5"
STATE = "state.json"
_PREFIX = "ckpt-"
_TMP = ".tmp-"
#: Fault injection for the crash tests: ``<point>:<n>`` kills (SIGKILL) this process at ``point`` of
#: the n-th checkpoint write (points: ``weights`` = inside the weights write, ``between`` = after the
#: weights and before the state file, ``rename`` = after the rename, before the old backup goes) or
#: raises ENOSPC there (``enospc``); ``step:<n>`` kills after training step n, between two backups;
#: ``report:`` after a stage's result is written, before its evaluation and report.
FAULT_ENV = "KERAS_FADA_FAULT"


def _fires(point: str, count: int | None) -> str | None:
    spec = os.environ.get(FAULT_ENV, "")
    name, _, n = spec.partition(":")
    if not spec or name not in (point, "enospc") or (n and count is not None and int(n) != count):
        return None
    return name


def fault(point: str, count: int | None = None) -> None:
    """Kills the process (or raises ENOSPC) when ``$KERAS_FADA_FAULT`` names ``point`` (and ``count``)."""
    name = _fires(point, count)
    if name is None:
        return
    if name == "enospc":
        if point == "weights":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return
    if point == "weights":  # a kill inside the write leaves a part of the file
        path = os.environ.get("_KERAS_FADA_FAULT_FILE")
        if path and os.path.exists(path):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)


def atomic_write(path: str, write) -> None:
    """Calls ``write(tmp_path)``, flushes the file and renames it to ``path``: readers see the old
    file or the complete new one, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = os.path.join(folder, f"{_TMP}{os.getpid()}-{base}")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_json(path: str, data) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    atomic_write(path, write)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ RNG states
def rng_states() -> dict:
    """Python's, NumPy's and (torch backend) torch's global RNG states, JSON-serialisable."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    out = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }
    if keras.backend.backend() == "torch":
        import torch

        out["torch"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
    return out


def set_rng_states(states: dict) -> None:
    if "numpy" in states:
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, gauss))
    if "python" in states:
        v, internal, gauss = states["python"]
        random.setstate((v, tuple(internal), gauss))
    if "torch" in states and keras.backend.backend() == "torch":
        import torch

        raw = np.frombuffer(base64.b64decode(states["torch"]), np.uint8).copy()
        torch.set_rng_state(torch.from_numpy(raw))


# ------------------------------------------------------------------------------------ the callback
class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` at each epoch end, written atomically, with the step, the data position
    and the RNG states; ``keep`` complete backups are kept (the latest and its fallback).

    Args:
        backup_dir: the folder of the backups (``ckpt-<step>/``); used by nothing else.
        keep: complete backups kept (>= 2 keeps a fallback for a damaged latest one).
        warn: where the one-line warnings go (default: stderr).
    """

    def __init__(self, backup_dir, keep: int = 2, warn=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.keep = max(1, int(keep))
        self._warn = warn or (lambda line: print(line, file=sys.stderr))
        self._restored_step = None
        self._writes = 0

    # --------------------------------------------------------------------------- reading
    def checkpoints(self) -> list[str]:
        """The complete backups, newest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        names = [
            n for n in os.listdir(self.backup_dir) if n.startswith(_PREFIX) and n[len(_PREFIX) :].isdigit()
        ]
        return [os.path.join(self.backup_dir, n) for n in sorted(names, reverse=True)]

    @staticmethod
    def read_state(folder: str) -> dict:
        """The backup's state file, checked against its weights file (size and SHA-256)."""
        with open(os.path.join(folder, STATE)) as f:
            state = json.load(f)
        weights = os.path.join(folder, WEIGHTS)
        if os.path.getsize(weights) != state["weights_bytes"] or _sha256(weights) != state["weights_sha256"]:
            raise OSError(f"{weights} does not match its state file (damaged)")
        return state

    def latest_step(self) -> int:
        """The step of the newest readable backup (0 without one); reads no weights."""
        for folder in self.checkpoints():
            try:
                return int(self.read_state(folder)["step"])
            except (OSError, ValueError, KeyError):
                continue
        return 0

    def restore(self, model) -> int:
        """Loads the newest readable backup into ``model`` (weights, optimiser states, RNG states)
        and returns its step (0 without one). A damaged backup is skipped with one warning line."""
        self._clean_temporaries()
        for folder in self.checkpoints():
            try:
                state = self.read_state(folder)
            except (OSError, ValueError, KeyError) as e:
                self._warn(
                    f"Warning: backup {folder} is unreadable ({_first_line(e)}); using the one before it"
                )
                continue
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(os.path.join(folder, WEIGHTS))
            except Exception as e:  # noqa: BLE001 - a file that passed its checksum but does not fit
                raise RunError(
                    f"backup {folder!r} does not fit this model (was the config changed?): {_first_line(e)}"
                ) from None
            set_rng_states(state.get("rng", {}))
            self._restored_step = int(state["step"])
            self._current_epoch = int(state["epoch"])
            self.state = state
            return self._restored_step
        self._restored_step = 0
        self.state = None
        return 0

    # --------------------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self._restored_step is not None and self._restored_step == step:
            return  # restored (or saved) by this object already: fit's initial_epoch is the caller's
        if self.restore(self.model):
            from keras_fada.backend.keras_internals import set_initial_epoch

            set_initial_epoch(self.model, self._current_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self.save(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if os.environ.get(FAULT_ENV, "").startswith("step:"):  # a kill between two backups
            self._batches = getattr(self, "_batches", self._restored_step or 0) + 1
            fault("step", self._batches)

    def on_train_end(self, logs=None):
        pass

    # --------------------------------------------------------------------------- writing
    def save(self, model, extra: dict | None = None) -> str:
        """Writes the backup of ``model`` at its current step; returns its folder."""
        self._writes += 1
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        os.makedirs(self.backup_dir, exist_ok=True)
        final = os.path.join(self.backup_dir, f"{_PREFIX}{step:09d}")
        tmp = os.path.join(self.backup_dir, f"{_TMP}{_PREFIX}{step:09d}-{os.getpid()}")
        try:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            os.makedirs(tmp)
            weights = os.path.join(tmp, WEIGHTS)
            model.save_weights(weights)
            fsync_file(weights)
            if _fires("weights", self._writes):
                os.environ["_KERAS_FADA_FAULT_FILE"] = weights
            fault("weights", self._writes)
            fault("between", self._writes)
            state = {
                "step": step,
                "epoch": int(self._current_epoch),
                "data_position": step,  # batches consumed: the stream restarts there
                "weights_bytes": os.path.getsize(weights),
                "weights_sha256": _sha256(weights),
                "rng": rng_states(),
                **(extra or {}),
            }
            with open(os.path.join(tmp, STATE), "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(self.backup_dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.checkpoints()
            kept = f"; the backup at step {self.latest_step()} is kept" if previous else ""
            raise RunError(f"cannot write the backup {final!r}: {e.strerror or e}{kept}") from None
        fault("rename", self._writes)
        for old in self.checkpoints()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        self._restored_step = step
        return final

    def _clean_temporaries(self):
        if os.path.isdir(self.backup_dir):
            for n in os.listdir(self.backup_dir):
                if n.startswith(_TMP):
                    shutil.rmtree(os.path.join(self.backup_dir, n), ignore_errors=True)


def _first_line(e) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


class SegmentorSnapshots(keras.callbacks.Callback):
    """Keeps the segmentor's weights every ``period`` steps as ``<folder>/segmentor_iter<N>.weights.h5``
    (the official ``model_iter<N>.pth``), the newest ``keep`` of them (``keep < 0``: all). With a
    ``discriminator`` (adaptation) also ``discriminator_iter<N>.weights.h5``, written first, so a listed
    segmentor snapshot has its discriminator, and pruned with it (the official file holds ``model_D``)."""

    def __init__(self, segmentor, folder, period, keep=-1, discriminator=None):
        super().__init__()
        self.segmentor, self.folder, self.discriminator = segmentor, folder, discriminator
        self.period, self.keep = int(period), int(keep)

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.keep == 0 or step % self.period:
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"segmentor_iter{step:06d}.weights.h5")
        parts = [(self.discriminator, R.discriminator_beside(path))] if self.discriminator is not None else []
        for layer, target in [*parts, (self.segmentor, path)]:
            try:
                save_weights_atomic(layer, target)
            except OSError as e:
                raise RunError(f"cannot write the snapshot {target!r}: {e.strerror or e}") from None
        if self.keep > 0:
            names = sorted(n for n in os.listdir(self.folder) if n.startswith("segmentor_iter"))
            for old in names[: -self.keep]:
                os.remove(os.path.join(self.folder, old))
            kept = {R.discriminator_beside(n) for n in names[-self.keep :]}
            for old in os.listdir(self.folder):  # a discriminator without its kept segmentor goes too
                if old.startswith("discriminator_iter") and old not in kept:
                    os.remove(os.path.join(self.folder, old))


def _h5_name(path: str) -> str:
    """Keras insists on the ``.weights.h5`` ending: the temporary file gets it too."""
    return path if path.endswith(".weights.h5") else path + ".weights.h5"


def save_weights_atomic(layer, path: str) -> None:
    """``layer``'s weights (a model, or a layer such as the discriminator) written to a temporary
    ``.weights.h5`` file, flushed and renamed into place."""

    def write(tmp):
        keras.saving.save_weights(layer, _h5_name(tmp))
        if _h5_name(tmp) != tmp:
            os.replace(_h5_name(tmp), tmp)

    atomic_write(path, write)


def save_model_atomic(model, path: str) -> None:
    """``model.save(path)`` (a ``.keras`` file) written to a temporary file, flushed and renamed."""
    atomic_write(path, model.save)
