"""Checking a task's datasets before training: every split listed, paired, and (in the full check)
each file read once, so a broken tree fails in minutes instead of hours into a run.

:func:`precheck` is the cheap part ``keras-fada train`` runs before building a network (listing and
pairing, no decoding, no backend); :func:`check_split` is what ``keras-fada check-data`` runs on
every split: image headers and file ends (truncation), every label decoded once (sizes against the
image, raw values against the dataset's, the share of ignored pixels).

Example:
>>> from keras_fada import data as kd
>>> report = check_split("source_train", kd.gta5("datasets/gta5"))  # doctest: +SKIP
>>> report.images, report.problems  # doctest: +SKIP
(24966, [])
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
import time

import numpy as np

from keras_fada.data.datasets import DatasetError, DatasetSpec, image_size

# The splits each training stage reads.
STAGE_SPLITS = {
    "source": ("source_train", "target_val"),
    "adapt": ("source_train", "target_train", "target_val"),
    "distill": ("target_train", "target_val"),
}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_LABEL_FORMATS = {
    "png8": "8-bit PNG (grey or palette index)",
    "png16_ch0": "16-bit PNG, class id in channel 0",
}


@dataclasses.dataclass
class SplitReport:
    """What :func:`check_split` found in one split; ``problems`` (which fail the check) and ``notes``
    (which training handles, e.g. image/label size mismatches: both are resized, as the official code
    does) name a path each."""

    split: str
    dataset: str
    images: int = 0
    labels: int | None = None  # None: the split has no labels
    decoding: str = "-"
    ignored_share: float | None = None
    problems: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------------------------ cheap part
def precheck(specs: dict, splits=None) -> dict:
    """Lists and pairs ``splits`` of ``specs`` (default: all); returns ``{split: number of images}``.
    Raises :class:`DatasetError` naming the first missing folder, list entry or unpaired file."""
    counts = {}
    for split in splits or tuple(specs):
        counts[split] = len(specs[split].list_files()[0])
    return counts


def precheck_task(cfg: dict, stages=tuple(STAGE_SPLITS)) -> dict:
    """:func:`precheck` of the splits the ``stages`` of ``cfg``'s task read (what ``train`` runs
    before building a network, so a missing split fails in the first second)."""
    from keras_fada.training import tasks

    splits = [s for s in tasks.SPLITS if any(s in STAGE_SPLITS[st] for st in stages)]
    return precheck(tasks.task_specs(cfg), splits)


# ------------------------------------------------------------------------------------ full check
def _ranges(values) -> str:
    """(0, 1, 2, 5, 255) -> '0-2, 5, 255'."""
    values, out, start = sorted(values), [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _truncated(path: str) -> bool:
    """A PNG without its IEND chunk or a JPEG without its end marker (read from the file's end)."""
    with open(path, "rb") as f:
        head = f.read(3)
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read()
    if head == b"\x89PN":
        return not tail.endswith(_PNG_END)
    if head[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in tail.rstrip(b"\x00\r\n ")[-4:]
    return False


def _png_bit_depth(path: str) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" else None


def _check_image(path: str):
    size = image_size(path)
    if size is None:
        return None, f"image {path!r} is unreadable (not an image Pillow can open)"
    if _truncated(path):
        return size, f"image {path!r} is truncated (no end marker)"
    return size, None


def _check_label(path: str, spec: DatasetSpec):
    from keras_fada.data import io as dio  # decodes with TensorFlow (16-bit) or Pillow

    if spec.label_format == "png16_ch0":
        depth = _png_bit_depth(path)
        if depth is not None and depth != 16:
            return (
                None,
                None,
                (
                    f"label {path!r} is a {depth}-bit PNG; {spec.name} labels are 16-bit PNGs with the class "
                    "id in channel 0"
                ),
            )
    try:
        raw = dio.read_raw_label(path, spec.label_format)
    except DatasetError as e:  # unreadable or truncated: the message names the file
        return None, None, " ".join(str(e).split())
    size = 65536 if spec.label_format == "png16_ch0" else 257
    counts = np.bincount(np.asarray(raw, np.int64).ravel(), minlength=size)
    return raw.shape[:2], counts, None


class _Progress:
    """A one-line progress display on stderr (files done, files/s, ETA), redrawn twice a second."""

    def __init__(self, title: str, total: int, enabled: bool):
        self.title, self.total, self.enabled = title, total, enabled
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int):
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        sys.stderr.write(f"\r{self.title}: {done}/{self.total} files, {rate:.0f}/s, ETA {eta:.0f} s ")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def check_split(
    split: str, spec: DatasetSpec, progress: bool = False, workers: int | None = None
) -> SplitReport:
    """Reads one split once: listing and pairing, image headers and ends, every label decoded.

    Problems found (each naming its path): a missing folder or list entry, unpaired images and
    labels, unreadable or truncated files, 8-bit labels where 16-bit ones belong (SYNTHIA),
    image/label size mismatches and raw label values the dataset's labels never hold.
    """
    report = SplitReport(split, spec.name)
    try:
        images, labels, report.problems = spec.scan()
    except DatasetError as e:
        report.problems.append(str(e))
        return report
    present = [p for p in images if os.path.isfile(p)]
    report.images = len(present)
    pairs = [(img, None) for img in present]
    if labels is not None:
        lbl_of = dict(zip(images, labels, strict=True))
        pairs = [(img, lbl_of[img] if os.path.isfile(lbl_of[img]) else None) for img in present]
        report.labels = sum(lbl is not None for _, lbl in pairs)
        report.decoding = _LABEL_FORMATS.get(spec.label_format, spec.label_format)

    def one(pair):
        img, lbl = pair
        size, img_problem = _check_image(img)
        if lbl is None:
            return img, lbl, size, img_problem, None, None, None
        return (img, lbl, size, img_problem, *_check_label(lbl, spec))

    totals, example = None, {}
    bar = _Progress(f"{split} ({spec.name})", len(pairs), progress)
    workers = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done, (img, lbl, size, img_problem, lsize, counts, lbl_problem) in enumerate(
            pool.map(one, pairs), start=1
        ):
            report.problems += [p for p in (img_problem, lbl_problem) if p]
            if counts is not None:
                totals = counts if totals is None else totals + counts
                for v in np.flatnonzero(counts):
                    example.setdefault(int(v), lbl)
                if size is not None and tuple(lsize) != tuple(size):
                    report.notes.append(
                        f"image {img!r} is {size[0]}x{size[1]} but its label {lbl!r} is {lsize[0]}x{lsize[1]}"
                    )
            bar.update(done)
    if totals is not None and totals.sum():
        from keras_fada.data import io as dio

        lut = dio.label_lut(spec)
        mapped = np.concatenate([lut, np.full(max(0, totals.size - lut.size), 255, lut.dtype)])[: totals.size]
        report.ignored_share = float(totals[mapped == 255].sum() / totals.sum())
        if spec.raw_values is not None:
            known = np.zeros(totals.size, bool)
            known[[v for v in spec.raw_values if v < totals.size]] = True
            for v in np.flatnonzero((totals > 0) & ~known):
                report.problems.append(
                    f"raw label value {int(v)} ({totals[v] / totals.sum():.2%} of the pixels, ignored) is "
                    f"not one {spec.name}'s labels hold ({_ranges(spec.raw_values)}), e.g. in {example[int(v)]!r}"
                )
    return report


def check_specs(specs: dict, progress: bool = False) -> list[SplitReport]:
    """:func:`check_split` of every split of ``specs`` (``{split: DatasetSpec}``)."""
    return [check_split(split, spec, progress) for split, spec in specs.items()]


def format_reports(reports) -> str:
    """The table ``keras-fada check-data`` prints, then every problem on its own line."""
    rows = [
        f"{'split':<14}{'dataset':<24}{'images':>8}{'labels':>8}{'ignored':>9}{'problems':>10}  labels read as"
    ]
    for r in reports:
        labels = "-" if r.labels is None else str(r.labels)
        ignored = "-" if r.ignored_share is None else f"{100 * r.ignored_share:.1f}%"
        rows.append(
            f"{r.split:<14}{r.dataset:<24}{r.images:>8}{labels:>8}{ignored:>9}{len(r.problems):>10}  {r.decoding}"
        )
    problems = [f"{r.split}: {p}" for r in reports for p in r.problems]
    rows.append("")
    rows += problems or ["no problems found"]
    rows += [
        f"{r.split}: note: {n} (resized to the training size, as the official code does)"
        for r in reports
        for n in r.notes
    ]
    return "\n".join(rows)
