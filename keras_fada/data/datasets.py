"""Dataset descriptions: one :class:`DatasetSpec` per dataset, one shared listing mechanism.

A spec says where the images and labels live, how a label path follows from an image path, how raw
label values map to train ids and at which size the official recipe trains.  The loaders in
:mod:`keras_fada.data.pipeline` only ever see specs; nothing below is dataset-specific code, only
dataset-specific *values*.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

from keras_fada.data import labels as L


class DatasetError(ValueError):
    """A dataset on disk does not match its expected layout, or one of its files is broken."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the shared loader needs to know about one split of one dataset.

    Attributes:
        name: short name (``"gta5"``, ``"cityscapes"``...), used in messages and cache files.
        root: the dataset root directory.
        image_dir: image folder relative to ``root``.
        image_suffix: the suffix that identifies image files (``".png"``, ``"_leftImg8bit.png"``).
        label_dir: label folder relative to ``root`` (absolute paths allowed), or ``None`` when the
            split has no labels (Cross-City train, Cityscapes train used as unlabelled target).
        label_suffix: replaces ``image_suffix`` to give the label file name.
        label_flat: labels live directly in ``label_dir`` under the image's base name (pseudo labels)
            instead of mirroring the image sub-folders.
        label_format: ``"png8"`` (grey or palette PNG; palette *indices* are the values) or
            ``"png16_ch0"`` (16-bit multi-channel PNG, class id in channel 0: SYNTHIA).
        label_map: raw label value -> train id; everything else -> 255.
        class_names: one name per train id.
        train_size: (height, width) of the official training resize.
        eval_size: (height, width) the image is resized to for evaluation (labels stay full size).
        recursive: look for images in sub-folders (cities) of ``image_dir``.
        list_file: optional text file with one image entry per line, relative to ``image_dir``
            (with or without ``image_suffix``), as the official list files; else the folder contents.
        layout: a human description of the expected layout, quoted in errors.
        extra_image_suffixes: further image suffixes accepted beside ``image_suffix`` (NTHU Cross-City
            ships ``.jpg`` and ``.png``); an entry without one takes the first that exists on disk.
        raw_values: the raw label values the dataset's labels may hold (mapped or ignored on
            purpose); ``keras-fada check-data`` reports any other value. ``None``: not checked.
    """

    name: str
    root: str
    image_dir: str
    image_suffix: str
    label_dir: str | None
    label_suffix: str
    label_map: dict
    class_names: tuple
    train_size: tuple = (512, 1024)
    eval_size: tuple = (512, 1024)
    label_format: str = "png8"
    label_flat: bool = False
    recursive: bool = False
    list_file: str | None = None
    layout: str = ""
    extra_image_suffixes: tuple = ()
    raw_values: tuple | None = None

    @property
    def image_suffixes(self) -> tuple[str, ...]:
        return (self.image_suffix, *self.extra_image_suffixes)

    def stem(self, path: str) -> str:
        """``path`` without its image suffix (``.../pano_00001_0_0.jpg`` -> ``.../pano_00001_0_0``)."""
        for suffix in self.image_suffixes:
            if suffix and path.endswith(suffix):
                return path[: -len(suffix)]
        return path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_labels(self) -> bool:
        return self.label_dir is not None

    def replace(self, **changes) -> DatasetSpec:
        return dataclasses.replace(self, **changes)

    def with_labels(self, label_dir: str, label_suffix: str = ".png", flat: bool = True, label_map=None):
        """The same images with other labels, e.g. the pseudo labels of the self-distillation stage
        (palette PNGs of train ids named after the image's base name)."""
        if label_map is None:
            label_map = L.identity_map(self.num_classes)
        return self.replace(
            label_dir=os.path.abspath(label_dir),
            label_suffix=label_suffix,
            label_flat=flat,
            label_format="png8",
            label_map=dict(label_map),
            raw_values=(*sorted(label_map), L.IGNORE_LABEL),
        )

    # ------------------------------------------------------------------ listing
    def _check_dir(self, rel: str, what: str) -> str:
        if not os.path.isdir(self.root):
            raise DatasetError(
                f"{self.name}: dataset root {self.root!r} does not exist; expected {self.layout}"
            )
        path = os.path.join(self.root, rel)
        if not os.path.isdir(path):
            raise DatasetError(f"{self.name}: {what} folder {path!r} does not exist; expected {self.layout}")
        return path

    def _list_entry(self, image_root: str, entry: str) -> str:
        if entry.endswith(self.image_suffixes):
            return entry
        for suffix in self.image_suffixes:  # no suffix in the list: the first that exists on disk
            if os.path.isfile(os.path.join(image_root, entry + suffix)):
                return entry + suffix
        return entry + self.image_suffix

    def _entries(self, image_root: str) -> list[str]:
        suffixes = self.image_suffixes
        if self.list_file is not None:
            if not os.path.isfile(self.list_file):
                raise DatasetError(f"{self.name}: list file {self.list_file!r} does not exist")
            with open(self.list_file) as f:
                entries = [line.strip() for line in f if line.strip()]
            return [self._list_entry(image_root, e) for e in entries]
        entries = []
        if self.recursive:
            for dirpath, dirnames, filenames in os.walk(image_root):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, image_root)
                for fn in filenames:
                    if fn.endswith(suffixes):
                        entries.append(os.path.normpath(os.path.join(rel_dir, fn)))
        else:
            entries = [fn for fn in os.listdir(image_root) if fn.endswith(suffixes)]
        return sorted(entries)

    def _label_rel(self, entry: str) -> str:
        stem = self.stem(entry)
        if self.label_flat:
            stem = os.path.basename(stem)
        return stem + self.label_suffix

    def scan(self) -> tuple[list[str], list[str] | None, list[str]]:
        """(image paths, label paths or None, problems): :meth:`list_files` without raising on
        unpaired files, which ``problems`` names one per line (``keras-fada check-data`` lists them
        all). A missing root, folder or list file still raises :class:`DatasetError`."""
        image_root = self._check_dir(self.image_dir, "image")
        entries = self._entries(image_root)
        if not entries:
            kinds = "' or '*".join(self.image_suffixes)
            raise DatasetError(
                f"{self.name}: no '*{kinds}' images under {image_root!r}; expected {self.layout}"
            )
        images = [os.path.join(image_root, e) for e in entries]
        problems = []
        if self.list_file is not None:
            for p in images:
                if not os.path.isfile(p):
                    problems.append(f"image {p!r} listed in {self.list_file!r} does not exist")
        if not self.has_labels:
            return images, None, problems
        label_root = self._check_dir(self.label_dir, "label")
        labels = [os.path.join(label_root, self._label_rel(e)) for e in entries]
        for img, lbl in zip(images, labels, strict=True):
            if not os.path.isfile(lbl):
                problems.append(f"image {img!r} has no label; expected {lbl!r}")
        if self.list_file is None:
            # The reverse direction: a label whose image is missing is an error as well.
            expected = set(os.path.normpath(p) for p in labels)
            suffix = self.label_suffix
            for dirpath, _dirnames, filenames in sorted(os.walk(label_root)):
                if not self.recursive and os.path.normpath(dirpath) != os.path.normpath(label_root):
                    continue
                for fn in sorted(filenames):
                    if not fn.endswith(suffix):
                        continue
                    lbl = os.path.normpath(os.path.join(dirpath, fn))
                    if self.label_flat or lbl in expected:
                        continue
                    rel = os.path.relpath(lbl, label_root)
                    img = os.path.join(image_root, rel[: -len(suffix)] + self.image_suffix)
                    problems.append(f"label {lbl!r} has no image; expected {img!r}")
        return images, labels, problems

    def list_files(self) -> tuple[list[str], list[str] | None]:
        """(image paths, label paths or None), sorted or in list-file order.

        Raises :class:`DatasetError` for a missing root/folder/list entry, an image without its label
        or a label without its image (naming the first, and how many more there are).
        """
        images, labels, problems = self.scan()
        if problems:
            more = f" (and {len(problems) - 1} more unpaired files)" if len(problems) > 1 else ""
            raise DatasetError(f"{self.name}: {problems[0]}{more}")
        return images, labels

    def __len__(self) -> int:
        return len(self.list_files()[0])


# ---------------------------------------------------------------------------------- PNG header sizes
def png_size(path: str) -> tuple[int, int] | None:
    """(height, width) from a PNG header, or None if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    return height, width


def image_size(path: str) -> tuple[int, int] | None:
    """(height, width) of a PNG, JPEG or any image Pillow knows, from its header (no pixel decode);
    None when the file is missing or not an image.

    >>> image_size("datasets/NTHU_Datasets/Rio/Images/Test/pano_00001_0_0.jpg")  # doctest: +SKIP
    (1024, 2048)
    """
    try:
        size = png_size(path)
    except OSError:
        return None
    if size is not None:
        return size
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return height, width


def find_size_mismatches(images: Sequence[str], labels: Sequence[str] | None, name: str = "") -> list:
    """Pairs whose image and label sizes differ (from the file headers; cheap).  Reported in one warning.

    The pipeline handles them deterministically: both are resized independently to the training size
    (as the official code does), or the label is resized (nearest) to the image size where no fixed
    training size applies.
    """
    if labels is None:
        return []
    bad = []
    for img, lbl in zip(images, labels, strict=True):
        si, sl = image_size(img), image_size(lbl)
        if si is not None and sl is not None and si != sl:
            bad.append((img, lbl, si, sl))
    if bad:
        shown = "; ".join(f"{i} {si} vs {lb} {sl}" for i, lb, si, sl in bad[:20])
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        warnings.warn(
            f"{name}: {len(bad)} image/label pairs differ in size; both are resized independently: "
            f"{shown}{more}",
            stacklevel=2,
        )
    return bad


# ---------------------------------------------------------------------------------- the datasets
# Raw values the labels may hold: Cityscapes label ids 0..33 (and 255, license plate's -1), SYNTHIA
# class ids 0..22 (void .. lanemarking).
CITYSCAPES_LABEL_IDS = (*range(34), 255)
SYNTHIA_CLASS_IDS = tuple(range(23))


def gta5(root: str, list_file: str | None = None, train_size=(720, 1280)) -> DatasetSpec:
    """GTA5: ``images/NNNNN.png`` and ``labels/NNNNN.png`` (palette PNGs of Cityscapes label ids)."""
    return DatasetSpec(
        name="gta5",
        raw_values=CITYSCAPES_LABEL_IDS,
        root=os.path.abspath(root),
        image_dir="images",
        image_suffix=".png",
        label_dir="labels",
        label_suffix=".png",
        label_map=dict(L.CITYSCAPES_19_MAP),
        class_names=L.CITYSCAPES_19_CLASSES,
        train_size=tuple(train_size),
        eval_size=tuple(train_size),
        list_file=list_file,
        layout="<root>/images/NNNNN.png and <root>/labels/NNNNN.png (palette PNGs of Cityscapes label ids)",
    )


def synthia(root: str, list_file: str | None = None, train_size=(760, 1280)) -> DatasetSpec:
    """SYNTHIA-RAND-CITYSCAPES: ``RAND_CITYSCAPES/RGB/NNNNNNN.png`` and ``RAND_CITYSCAPES/GT/LABELS/
    NNNNNNN.png`` (16-bit multi-channel PNGs, class id in channel 0) -> 16 classes."""
    return DatasetSpec(
        name="synthia",
        raw_values=SYNTHIA_CLASS_IDS,
        root=os.path.abspath(root),
        image_dir="RAND_CITYSCAPES/RGB",
        image_suffix=".png",
        label_dir="RAND_CITYSCAPES/GT/LABELS",
        label_suffix=".png",
        label_format="png16_ch0",
        label_map=dict(L.SYNTHIA_16_MAP),
        class_names=L.SYNTHIA_16_CLASSES,
        train_size=tuple(train_size),
        eval_size=tuple(train_size),
        list_file=list_file,
        layout=(
            "<root>/RAND_CITYSCAPES/RGB/NNNNNNN.png and <root>/RAND_CITYSCAPES/GT/LABELS/NNNNNNN.png "
            "(16-bit PNGs, class id in channel 0)"
        ),
    )


def cityscapes(
    root: str,
    split: str = "train",
    num_classes: int = 19,
    list_file: str | None = None,
    labelled: bool = True,
    train_size=(512, 1024),
    eval_size=(512, 1024),
) -> DatasetSpec:
    """Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` -> 19 train ids, 16 for the SYNTHIA task, or
    the 13 Cross-City classes.
    ``labelled=False`` gives the unlabelled target images (no gtFine needed)."""
    class_sets = {
        19: (L.CITYSCAPES_19_MAP, L.CITYSCAPES_19_CLASSES),
        16: (L.CITYSCAPES_16_MAP, L.SYNTHIA_16_CLASSES),
        13: (L.CROSSCITY_13_MAP, L.CROSSCITY_13_CLASSES),
    }
    if num_classes not in class_sets:
        raise ValueError(f"cityscapes: num_classes must be 19, 16 or 13, got {num_classes}")
    label_map, names = class_sets[num_classes]
    return DatasetSpec(
        name=f"cityscapes_{split}",
        raw_values=CITYSCAPES_LABEL_IDS,
        root=os.path.abspath(root),
        image_dir=f"leftImg8bit/{split}",
        image_suffix="_leftImg8bit.png",
        label_dir=f"gtFine/{split}" if labelled else None,
        label_suffix="_gtFine_labelIds.png",
        label_map=dict(label_map),
        class_names=names,
        train_size=tuple(train_size),
        eval_size=tuple(eval_size),
        recursive=True,
        list_file=list_file,
        layout=(
            f"<root>/leftImg8bit/{split}/<city>/<stem>_leftImg8bit.png and "
            f"<root>/gtFine/{split}/<city>/<stem>_gtFine_labelIds.png"
        ),
    )


def crosscity(
    root: str,
    city: str,
    split: str = "test",
    num_classes: int = 19,
    list_file: str | None = None,
    train_size=(512, 1024),
    eval_size=(512, 1024),
) -> DatasetSpec:
    """NTHU Cross-City: ``<City>/Images/{Train,Test}/<stem>.jpg`` (or ``.png``: Rio's test set mixes
    both), ``<City>/Labels/Test/<stem>_eval.png`` (Cityscapes label ids).  Train images are unlabelled.
    ``num_classes=19`` maps to the Cityscapes train ids (the model is trained with 19 classes; report
    the 13 of ``CLASSES_13_TRAIN_IDS_19``), ``num_classes=13`` maps straight to the 13 Cross-City
    classes.  Without ``list_file``, the city's list ``{train,test}.txt`` (stems, with or without
    extension) is used when present, from ``<root>/<City>/List/`` or, as the lists ship,
    ``<root>/../NTHU_list/<City>/List/`` (or ``<root>/NTHU_list/...``); else the folder contents."""
    if city not in L.CROSSCITY_CITIES:
        raise ValueError(f"crosscity: city must be one of {L.CROSSCITY_CITIES}, got {city!r}")
    if split not in ("train", "test"):
        raise ValueError(f"crosscity: split must be 'train' or 'test', got {split!r}")
    if num_classes not in (19, 13):
        raise ValueError(f"crosscity: num_classes must be 19 or 13, got {num_classes}")
    label_map, names = (
        (L.CITYSCAPES_19_MAP, L.CITYSCAPES_19_CLASSES)
        if num_classes == 19
        else (L.CROSSCITY_13_MAP, L.CROSSCITY_13_CLASSES)
    )
    root = os.path.abspath(root)
    if list_file is None:
        places = (root, os.path.join(os.path.dirname(root), "NTHU_list"), os.path.join(root, "NTHU_list"))
        candidates = [os.path.join(place, city, "List", f"{split}.txt") for place in places]
        list_file = next((c for c in candidates if os.path.isfile(c)), None)
    sub = split.capitalize()
    return DatasetSpec(
        name=f"crosscity_{city}_{split}",
        root=root,
        image_dir=f"{city}/Images/{sub}",
        image_suffix=".jpg",
        extra_image_suffixes=(".png",),
        raw_values=CITYSCAPES_LABEL_IDS,
        label_dir=f"{city}/Labels/Test" if split == "test" else None,
        label_suffix="_eval.png",
        label_map=dict(label_map),
        class_names=names,
        train_size=tuple(train_size),
        eval_size=tuple(eval_size),
        list_file=list_file,
        layout=(
            f"<root>/{city}/Images/{{Train,Test}}/<stem>.jpg (or .png) and "
            f"<root>/{city}/Labels/Test/<stem>_eval.png (Cityscapes label ids)"
        ),
    )
