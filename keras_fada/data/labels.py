"""Label maps, class names and the Cityscapes palette, as constant tables.

Every dataset stores some *raw* label value per pixel (Cityscapes label ids for GTA5, Cityscapes and
Cross-City; SYNTHIA class ids for SYNTHIA-RAND-CITYSCAPES).  A label map turns raw values into the
contiguous training ids the network predicts; every raw value that is not a key of the map becomes
``IGNORE_LABEL`` (255).  The tables follow the official FADA code (``core/datasets/*.py``) and the
Cityscapes authors' ``cityscapesscripts.helpers.labels``.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255

# Cityscapes label id -> train id (19 classes). Used for GTA5 and Cityscapes.
CITYSCAPES_19_MAP: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_19_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

# Cityscapes label id -> 16-class id, for the SYNTHIA -> Cityscapes task (no terrain, truck, train).
CITYSCAPES_16_MAP: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9,
    24: 10, 25: 11, 26: 12, 28: 13, 32: 14, 33: 15,
}  # fmt: skip
SYNTHIA_16_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle",
)  # fmt: skip

# SYNTHIA-RAND-CITYSCAPES class id (channel 0 of GT/LABELS) -> 16-class id.
SYNTHIA_16_MAP: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9,
    10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15,
}  # fmt: skip

# The 13 classes reported on SYNTHIA (mIoU*, drop wall, fence, pole) and on NTHU Cross-City.
CLASSES_13_TRAIN_IDS_19: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CLASSES_13_IDS_16: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
CROSSCITY_13_CLASSES: tuple[str, ...] = tuple(CITYSCAPES_19_CLASSES[i] for i in CLASSES_13_TRAIN_IDS_19)
# Cityscapes label id -> 13-class id (NTHU Cross-City labels are Cityscapes label ids).
CROSSCITY_13_MAP: dict[int, int] = {
    label_id: CLASSES_13_TRAIN_IDS_19.index(train_id)
    for label_id, train_id in CITYSCAPES_19_MAP.items()
    if train_id in CLASSES_13_TRAIN_IDS_19
}
CROSSCITY_CITIES: tuple[str, ...] = ("Rome", "Rio", "Tokyo", "Taipei")

# Cityscapes palette indexed by train id (19 classes), as in cityscapesscripts.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# Cityscapes palette indexed by label id (0..33), e.g. for GTA5-style palette PNGs of label ids.
CITYSCAPES_LABEL_ID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230),
    (119, 11, 32),
)  # fmt: skip

TRAIN_ID_TO_CITYSCAPES_LABEL_ID: dict[int, int] = {v: k for k, v in CITYSCAPES_19_MAP.items()}


def identity_map(num_classes: int) -> dict[int, int]:
    """The map of a label image that already holds train ids (e.g. pseudo labels)."""
    return {i: i for i in range(num_classes)}


def lookup_table(label_map: dict[int, int], size: int = 256) -> np.ndarray:
    """A dense uint8 table ``lut[raw] = train id`` of ``size`` entries; unmapped values -> 255."""
    lut = np.full((size,), IGNORE_LABEL, dtype=np.uint8)
    for raw, train_id in label_map.items():
        if not 0 <= raw < size:
            raise ValueError(f"raw label {raw} does not fit a table of {size} entries")
        lut[raw] = train_id
    return lut


def apply_label_map(raw: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map raw label values through ``lut``; values beyond the table become 255."""
    raw = np.asarray(raw)
    if raw.dtype == np.uint8 and lut.shape[0] >= 256:
        return lut[raw]
    raw = raw.astype(np.int64)
    inside = (raw >= 0) & (raw < lut.shape[0])
    return np.where(inside, lut[np.clip(raw, 0, lut.shape[0] - 1)], IGNORE_LABEL).astype(np.uint8)


def palette_flat(palette=CITYSCAPES_PALETTE) -> list[int]:
    """A 768-entry flat palette for Pillow ``putpalette`` (unused entries black)."""
    flat = [c for rgb in palette for c in rgb]
    return flat + [0] * (768 - len(flat))
