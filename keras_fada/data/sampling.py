"""Class-presence statistics (computed once, cached beside the data) and the official
class-balanced source sampler (``core/datasets/gta5.py`` / ``synthia.py`` of JDAI-CV/FADA)."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_fada.data import io as dio
from keras_fada.data.datasets import DatasetSpec

SUB_EPOCH_SIZE = 3000
_STATS_VERSION = 1


def _user_cache_dir() -> str:
    base = os.environ.get("KERAS_FADA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "keras_fada"
    )
    return base


def class_presence_cache_path(spec: DatasetSpec) -> str:
    """``<root>/.keras_fada_class_presence_<name>.json``, or a file in the user cache dir
    (``$KERAS_FADA_CACHE``, else ``~/.cache/keras_fada``) when the root is not writable."""
    fname = f".keras_fada_class_presence_{spec.name}.json"
    if os.access(spec.root, os.W_OK):
        return os.path.join(spec.root, fname)
    digest = hashlib.sha1(spec.root.encode()).hexdigest()[:12]
    return os.path.join(_user_cache_dir(), f"{digest}{fname}")


def _fingerprint(spec: DatasetSpec, labels: list[str]) -> dict:
    rel = [os.path.relpath(p, spec.root) for p in labels]
    sizes = [os.path.getsize(p) for p in labels]
    h = hashlib.sha1()
    for r, s in zip(rel, sizes, strict=True):
        h.update(f"{r}:{s}\n".encode())
    return {
        "version": _STATS_VERSION,
        "label_format": spec.label_format,
        "label_map": sorted([int(k), int(v)] for k, v in spec.label_map.items()),
        "num_classes": spec.num_classes,
        "files_sha1": h.hexdigest(),
        "num_files": len(labels),
    }


def class_presence(spec: DatasetSpec, labels: list[str] | None = None, workers: int | None = None):
    """For each label file (in listing order), the sorted train ids present in it.

    Computed once by decoding every label, then cached as JSON (see :func:`class_presence_cache_path`);
    the cache is reused while the label files (names and byte sizes), the label map and the format
    are unchanged.
    """
    if labels is None:
        _, labels = spec.list_files()
    if labels is None:
        raise ValueError(f"{spec.name}: class statistics need labels")
    path = class_presence_cache_path(spec)
    key = _fingerprint(spec, labels)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                cached = json.load(f)
            if cached.get("key") == key:
                return [list(c) for c in cached["classes"]]
        except (OSError, ValueError):
            pass
    lut = dio.label_lut(spec)

    def classes_of(p: str) -> list[int]:
        mapped = dio.read_label(p, spec.label_format, lut)
        present = np.flatnonzero(np.bincount(mapped.ravel(), minlength=256)[: spec.num_classes])
        return [int(c) for c in present]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        classes = list(pool.map(classes_of, labels))
    payload = {"key": key, "files": [os.path.relpath(p, spec.root) for p in labels], "classes": classes}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only everything: recompute next time
    return classes


class ClassBalancedSampler:
    """The official class-balanced draw of source files, seeded.

    Draws come in sub-epochs of ``sub_epoch`` (3000).  Within a sub-epoch, f_c is the share of class
    occurrences drawn so far (uniform at the start); class c is sampled with weight
    ``1 / ln(1.01 + f_c)`` (normalised), the next file of c's (shuffled) file list is taken, and all
    classes present in that file are added to the counts.  A class's list is reshuffled when it is
    exhausted (the official code wraps with ``% (len - 1)``; here it restarts at 0).  Classes present
    in no file are never sampled.
    """

    def __init__(self, file_classes, num_classes: int, seed: int = 0, sub_epoch: int = SUB_EPOCH_SIZE):
        self.file_classes = [np.asarray(c, dtype=np.int64) for c in file_classes]
        self.num_classes = int(num_classes)
        self.sub_epoch = int(sub_epoch)
        self.rng = np.random.default_rng(seed)
        self.class_files = [[] for _ in range(self.num_classes)]
        for i, cl in enumerate(self.file_classes):
            for c in cl:
                self.class_files[int(c)].append(i)
        self.active = np.array([c for c in range(self.num_classes) if self.class_files[c]], dtype=np.int64)
        if self.active.size == 0:
            raise ValueError("class-balanced sampling: no file contains any class")
        self.class_files = [np.array(f, dtype=np.int64) for f in self.class_files]
        for c in self.active:
            self.rng.shuffle(self.class_files[c])
        self.pointer = np.zeros(self.num_classes, dtype=np.int64)

    def _next_file(self, c: int) -> int:
        files = self.class_files[c]
        if self.pointer[c] >= len(files):
            self.rng.shuffle(files)
            self.pointer[c] = 0
        f = int(files[self.pointer[c]])
        self.pointer[c] += 1
        return f

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` file indices; a call starts a new sub-epoch (deterministic given seed and n)."""
        out: list[int] = []
        while len(out) < n:
            counts = np.zeros(self.num_classes, dtype=np.float64)
            for _ in range(self.sub_epoch):
                f = counts[self.active]
                total = f.sum()
                dist = f / total if total > 0 else f
                w = 1.0 / np.log(1.01 + dist)
                cdf = np.cumsum(w)
                k = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
                c = int(self.active[min(k, len(self.active) - 1)])
                fidx = self._next_file(c)
                out.append(fidx)
                counts[self.file_classes[fidx]] += 1
                if len(out) >= n:
                    break
        return np.asarray(out[:n], dtype=np.int64)
