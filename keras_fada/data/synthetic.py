"""The built-in synthetic domain pair: procedural street scenes on the Cityscapes 19-class space.

:func:`ensure_synthetic_pair` writes

* a **source** tree in the GTA5 layout (``images/NNNNN.png``, ``labels/NNNNN.png`` palette PNGs of
  Cityscapes *label ids*, plus ``train_list.txt`` / ``val_list.txt``) with a flat, "rendered" look;
* a **target** tree in the Cityscapes layout (``leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png``,
  ``gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png``) with another appearance: shifted class
  colours and illumination, textures, sensor noise and blur, and slightly different scene statistics,

so the whole job runs through the same loaders as the real datasets.  Scenes share their layout rules
(sky above, road below, sidewalks, buildings, vegetation, terrain, poles with signs and lights,
vehicles, persons, riders), so a model can transfer, but colours and textures differ enough that a
source-only model loses a lot on the target.  Generation is NumPy only, seeded, and cached: the trees
are rewritten only when the generator parameters (``params.json``) change.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image

from keras_fada.data import datasets as D
from keras_fada.data import labels as L

GENERATOR_VERSION = 1
TARGET_CITIES = ("synthtown", "noiseville")
VOID_LABEL_ID = 1  # Cityscapes "ego vehicle" -> ignored (255)

# Flat "rendered" base colours per train id (source domain).
_SOURCE_COLORS = np.array(
    [
        (95, 92, 100), (175, 160, 150), (150, 110, 85), (170, 165, 120), (130, 100, 70), (70, 70, 75),
        (35, 35, 35), (220, 200, 40), (60, 140, 50), (140, 160, 80), (110, 170, 235), (200, 60, 60),
        (60, 60, 200), (30, 70, 160), (200, 200, 200), (220, 150, 40), (120, 40, 120), (40, 40, 40),
        (60, 180, 180),
    ],
    dtype=np.float32,
)  # fmt: skip


def _target_colors() -> np.ndarray:
    """Target class colours: a global colour transform of the source ones (desaturated, cold, darker)
    plus a few class-specific changes (e.g. grey concrete buildings, overcast sky, white cars)."""
    c = _SOURCE_COLORS.copy()
    grey = c @ np.array([0.299, 0.587, 0.114], np.float32)
    c = 0.45 * c + 0.55 * grey[:, None]
    c = c @ np.array([[0.85, 0.05, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 1.05]], np.float32).T
    c = 255.0 * (np.clip(c, 0, 255) / 255.0) ** 1.25
    c[2] = (125, 125, 130)  # building: grey concrete
    c[10] = (185, 195, 205)  # sky: overcast
    c[13] = (150, 150, 160)  # car: silver
    c[8] = (70, 95, 55)  # vegetation: darker
    return c.astype(np.float32)


_TARGET_COLORS = _target_colors()


# ------------------------------------------------------------------------------------ scene layout
def _scene(rng: np.random.Generator, h: int, w: int, domain: str):
    """(labels (h, w) uint8 train ids / 255, instances (h, w) int32)."""
    lab = np.full((h, w), 10, np.uint8)
    inst = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nid = [1]

    def put(mask, cls):
        lab[mask] = cls
        inst[mask] = nid[0]
        nid[0] += 1

    target = domain == "target"
    horizon = h * rng.uniform(0.36, 0.46) if target else h * rng.uniform(0.40, 0.52)
    vx = w * rng.uniform(0.4, 0.6)
    ground = yy >= horizon
    depth = np.clip((yy - horizon) / (h - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom
    half = w * rng.uniform(0.32, 0.5) * depth
    dist = np.abs(xx - vx)
    side_w = half * rng.uniform(0.25, 0.45) + 1
    put(ground, 0)
    for sign in (-1, 1):
        side = (np.sign(xx - vx) == sign) & ground & (dist >= half)
        put(side & (dist < half + side_w), 1)
        put(side & (dist >= half + side_w), 9 if rng.random() < 0.5 else 1)
    # buildings / walls along both sides, standing on the horizon
    for sign in (-1, 1):
        x = vx + sign * w * rng.uniform(0.04, 0.1)
        while 0 <= x < w:
            bw = w * rng.uniform(0.08, 0.22)
            x2 = x + sign * bw
            lo, hi = min(x, x2), max(x, x2)
            top = horizon - h * rng.uniform(0.12, 0.4) * (0.5 + abs(x - vx) / w)
            base = horizon + h * 0.05 * abs(x - vx) / w
            cls = 3 if rng.random() < 0.1 else 2
            put((xx >= lo) & (xx < hi) & (yy >= top) & (yy < base) & (lab == 10), cls)
            x = x2
    # trees: crowns and trunks
    for _ in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(0, w), horizon - h * rng.uniform(0.0, 0.25)
        rx, ry = w * rng.uniform(0.03, 0.09), h * rng.uniform(0.06, 0.15)
        crown = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        put(crown | ((np.abs(xx - cx) < 1 + rx * 0.1) & (yy >= cy) & (yy < horizon + h * 0.08)), 8)
    # fences along the sidewalk edge
    if rng.random() < 0.4:
        top = horizon - h * 0.02
        put((yy >= top) & (yy < horizon + h * 0.06) & (dist > half + side_w * 0.8) & (lab != 0), 4)
    # poles with signs and traffic lights
    for _ in range(rng.integers(1, 4)):
        sgn = rng.choice([-1, 1])
        yb = horizon + (h - horizon) * rng.uniform(0.2, 0.8)
        d = (yb - horizon) / (h - horizon)
        hw_b = w * 0.4 * d
        px = vx + sgn * (hw_b + w * 0.02 * d + 1)
        ph = h * 0.5 * d + 4
        pw = max(1.0, w * 0.006 * (1 + 2 * d))
        put((np.abs(xx - px) <= pw) & (yy >= yb - ph) & (yy < yb), 5)
        kind = rng.random()
        bx, by = px - sgn * pw * 2, yb - ph
        s = max(2.0, h * 0.06 * (0.5 + d))
        if kind < 0.45:
            put((np.abs(xx - bx) <= s * 0.6) & (yy >= by) & (yy < by + s * 1.2), 6)
        elif kind < 0.9:
            put(((xx - bx) ** 2 + (yy - by - s * 0.5) ** 2) <= (s * 0.6) ** 2, 7)
    # vehicles on the road, far to near
    n_veh = rng.integers(1, 6 if target else 4)
    for yb in np.sort(horizon + (h - horizon) * rng.uniform(0.15, 1.0, n_veh)):
        d = (yb - horizon) / (h - horizon)
        r = rng.random()
        cls = 13 if r < 0.75 else (14 if r < 0.87 else (15 if r < 0.97 else 16))
        ch = h * 0.16 * d * (1.0 if cls == 13 else 1.9) + 2
        cw = ch * (1.7 if cls == 13 else 2.3)
        cx = vx + rng.uniform(-0.8, 0.8) * w * 0.4 * d
        body = (np.abs(xx - cx) <= cw / 2) & (yy >= yb - ch) & (yy < yb)
        cabin = (np.abs(xx - cx) <= cw / 3) & (yy >= yb - ch * 1.4) & (yy < yb)
        put(body | (cabin if cls == 13 else body), cls)
    # persons on the sidewalks, riders on bicycles / motorcycles on the road edge
    for _ in range(rng.integers(0, 5)):
        yb = horizon + (h - horizon) * rng.uniform(0.1, 1.0)
        d = (yb - horizon) / (h - horizon)
        ph = h * 0.28 * d + 3
        rider = rng.random() < 0.3
        sgn = rng.choice([-1, 1])
        px = vx + sgn * (w * 0.4 * d * (0.75 if rider else 1.15))
        if rider:
            bike = (np.abs(xx - px) <= ph * 0.4) & (yy >= yb - ph * 0.4) & (yy < yb)
            put(bike, 17 if rng.random() < 0.4 else 18)
            yb = yb - ph * 0.3
        body = (((xx - px) / (ph * 0.16)) ** 2 + ((yy - (yb - ph * 0.4)) / (ph * 0.4)) ** 2) <= 1
        head = ((xx - px) ** 2 + (yy - (yb - ph * 0.9)) ** 2) <= (ph * 0.11) ** 2
        put(body | head, 12 if rider else 11)
    # ego-vehicle bonnet (void) at the bottom of some frames
    if rng.random() < 0.3:
        lab[int(h * 0.94) :, :] = 255
    return lab, inst


# ------------------------------------------------------------------------------------ rendering
def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):  # separable [1, 2, 1] / 4
        img = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
        img = 0.25 * img[:-2] + 0.5 * img[1:-1] + 0.25 * img[2:]
        img = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
    return img


def _render(rng, lab, inst, domain: str) -> np.ndarray:
    h, w = lab.shape
    target = domain == "target"
    colors = _TARGET_COLORS if target else _SOURCE_COLORS
    cls = np.where(lab == 255, 17, lab).astype(np.int64)  # the bonnet looks like a dark vehicle
    # a colour offset per instance (cars of different colours, buildings of different paints)
    offsets = rng.normal(0, 14 if target else 22, size=(int(inst.max()) + 2, 3)).astype(np.float32)
    img = colors[cls] + offsets[inst]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = lab == 10
    img[sky] += (yy[sky] / h * (50 if target else 30))[:, None]
    if not target:
        img *= rng.uniform(0.9, 1.1)
        return np.clip(img, 0, 255).astype(np.uint8)
    # target: textures, illumination, noise, blur
    win = ((yy.astype(int) // 3) % 3 == 0) | ((xx.astype(int) // 3) % 3 == 0)
    img[(lab == 2) & ~win] *= 0.7  # window grid on buildings
    veg = (lab == 8) | (lab == 9)
    img[veg] *= rng.uniform(0.6, 1.3, size=(int(veg.sum()), 1)).astype(np.float32)
    road = lab == 0
    img[road] += rng.normal(0, 10, size=(int(road.sum()), 1)).astype(np.float32)
    lane = road & (np.abs(xx - w / 2) < 1) & ((yy.astype(int) // 4) % 2 == 0)
    img[lane] = (200, 200, 190)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * (xx / w - 0.5) + np.sin(ang) * (yy / h - 0.5))[..., None]
    img = img * (rng.uniform(0.75, 1.05) + 0.5 * ramp) + rng.uniform(-15, 15, size=3).astype(np.float32)
    img = _blur(img, 1)
    img += rng.normal(0, 7, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _to_label_ids(lab: np.ndarray) -> np.ndarray:
    lut = np.full(256, 0, np.uint8)  # anything unmapped -> 0 "unlabeled"
    for train_id, label_id in L.TRAIN_ID_TO_CITYSCAPES_LABEL_ID.items():
        lut[train_id] = label_id
    lut[255] = VOID_LABEL_ID
    return lut[lab]


def generate_sample(seed: int, height: int, width: int, domain: str):
    """One (image (H, W, 3) uint8, train ids (H, W) uint8) of ``domain`` ('source' or 'target')."""
    rng = np.random.default_rng(seed)
    lab, inst = _scene(rng, height, width, domain)
    return _render(rng, lab, inst, domain), lab


# ------------------------------------------------------------------------------------ trees
def _write_source(root, params):
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    n, n_val = params["num_source"], params["num_source_val"]
    names = []
    for i in range(n):
        seed = params["seed"] * 1_000_003 + i
        img, lab = generate_sample(seed, params["height"], params["width"], "source")
        name = f"{i + 1:05d}.png"
        Image.fromarray(img).save(os.path.join(root, "images", name))
        p = Image.fromarray(_to_label_ids(lab), mode="P")
        p.putpalette(L.palette_flat(L.CITYSCAPES_LABEL_ID_PALETTE))
        p.save(os.path.join(root, "labels", name))
        names.append(name)
    with open(os.path.join(root, "train_list.txt"), "w") as f:
        f.write("".join(f"{x}\n" for x in names[: n - n_val]))
    with open(os.path.join(root, "val_list.txt"), "w") as f:
        f.write("".join(f"{x}\n" for x in names[n - n_val :]))


def _write_target(root, params):
    k = 0
    for split, n in (("train", params["num_target_train"]), ("val", params["num_target_val"])):
        for i in range(n):
            city = TARGET_CITIES[i % len(TARGET_CITIES)]
            img_dir = os.path.join(root, "leftImg8bit", split, city)
            lbl_dir = os.path.join(root, "gtFine", split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(lbl_dir, exist_ok=True)
            seed = params["seed"] * 1_000_003 + 500_000 + k
            k += 1
            img, lab = generate_sample(seed, params["height"], params["width"], "target")
            stem = f"{city}_{i // len(TARGET_CITIES):06d}_{i % 1000:06d}"
            Image.fromarray(img).save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
            lbl = Image.fromarray(_to_label_ids(lab), mode="L")
            lbl.save(os.path.join(lbl_dir, f"{stem}_gtFine_labelIds.png"))


def ensure_synthetic_pair(
    root: str,
    num_source: int = 300,
    num_target_train: int = 200,
    num_target_val: int = 100,
    height: int = 64,
    width: int = 128,
    seed: int = 0,
    num_source_val: int = 50,
) -> tuple[str, str]:
    """Generate (or reuse) the synthetic pair under ``root``; returns ``(source_root, target_root)``.

    ``source_root`` is a GTA5 tree (``gta5(source_root, list_file=<source_root>/train_list.txt)``),
    ``target_root`` a Cityscapes tree.  The trees are regenerated when any parameter changes.
    """
    params = {
        "version": GENERATOR_VERSION,
        "num_source": int(num_source),
        "num_source_val": int(num_source_val),
        "num_target_train": int(num_target_train),
        "num_target_val": int(num_target_val),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
    }
    if not 0 <= params["num_source_val"] < params["num_source"]:
        raise ValueError("num_source_val must be in [0, num_source)")
    root = os.path.abspath(root)
    src, tgt = os.path.join(root, "source"), os.path.join(root, "target")
    meta = os.path.join(root, "params.json")
    if os.path.isfile(meta) and os.path.isdir(src) and os.path.isdir(tgt):
        try:
            with open(meta) as f:
                if json.load(f) == params:
                    return src, tgt
        except (OSError, ValueError):
            pass
    os.makedirs(root, exist_ok=True)
    if os.path.exists(meta):
        os.remove(meta)
    for d in (src, tgt):
        if os.path.isdir(d):
            shutil.rmtree(d)
    _write_source(src, params)
    _write_target(tgt, params)
    with open(meta, "w") as f:
        json.dump(params, f, indent=1)
    return src, tgt


def synthetic_specs(root: str, **kwargs) -> dict[str, D.DatasetSpec]:
    """Generate (or reuse) the pair and return the specs of the synthetic task: ``source_train``,
    ``source_val`` (GTA5 layout with list files), ``target_train``, ``target_val`` (Cityscapes layout).
    Training/eval sizes are the generated size."""
    src, tgt = ensure_synthetic_pair(root, **kwargs)
    with open(os.path.join(root, "params.json")) as f:
        p = json.load(f)
    size = (p["height"], p["width"])
    return {
        "source_train": D.gta5(src, list_file=os.path.join(src, "train_list.txt"), train_size=size),
        "source_val": D.gta5(src, list_file=os.path.join(src, "val_list.txt"), train_size=size),
        "target_train": D.cityscapes(tgt, "train", train_size=size, eval_size=size),
        "target_val": D.cityscapes(tgt, "val", train_size=size, eval_size=size),
    }
