"""Label-free checkpoint selection: scores of a segmentor's softmax predictions on unlabelled target
images (issue 25), so a snapshot can be chosen without target labels, and how well each score ranks
snapshots where labels exist (Kendall's tau with mIoU, the selection gap).

Scores (each oriented by :data:`HIGHER_IS_BETTER`):
- ``entropy``: mean per-pixel prediction entropy (lower: more confident).
- ``infomax``: mean entropy minus the entropy of the mean prediction (lower: confident *and* diverse).
- ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): per image, the softmax (temperature
  0.05) of the cosine similarities of sampled pixels' L2-normalised probability vectors, self excluded,
  then the mean entropy of each row (higher: denser neighbourhoods).
The fine-grained discriminator's confusion is not a score here: snapshots hold the segmentor only
(the adaptation stage keeps D in its two resume backups, not per snapshot).
"""

from __future__ import annotations

import numpy as np
from keras import ops

SCORES = ("entropy", "infomax", "snd")
HIGHER_IS_BETTER = {"entropy": False, "infomax": False, "snd": True}
SND_TEMPERATURE = 0.05


def _entropy(probs, axis=-1):
    """Entropy of probability vectors along ``axis`` (0 log 0 = 0)."""
    p = ops.convert_to_tensor(probs, "float32")
    return -ops.sum(p * ops.log(ops.maximum(p, 1e-12)), axis=axis)


def mean_entropy(probs) -> float:
    """Mean per-pixel entropy of ``probs`` (..., K)."""
    return float(ops.convert_to_numpy(ops.mean(_entropy(probs))))


def information_maximisation(probs) -> float:
    """Mean per-pixel entropy minus the entropy of the mean prediction over all pixels of ``probs``."""
    p = ops.reshape(ops.convert_to_tensor(probs, "float32"), (-1, ops.shape(probs)[-1]))
    return float(ops.convert_to_numpy(ops.mean(_entropy(p)) - _entropy(ops.mean(p, axis=0))))


def neighbourhood_density(vectors, temperature=SND_TEMPERATURE) -> float:
    """SND of one set of vectors (M, K): mean entropy of each row of the softmax of the cosine
    similarities / temperature, the diagonal (self) masked out."""
    v = ops.convert_to_tensor(vectors, "float32")
    v = v / ops.maximum(ops.sqrt(ops.sum(v * v, axis=-1, keepdims=True)), 1e-12)
    sim = ops.matmul(v, ops.transpose(v)) / temperature
    m = ops.shape(sim)[0]
    sim = ops.where(ops.eye(m, dtype="bool"), ops.full_like(sim, -1e9), sim)
    return float(ops.convert_to_numpy(ops.mean(_entropy(ops.softmax(sim, axis=-1)))))


def sample_pixels(height, width, count, seed) -> np.ndarray:
    """``count`` distinct flat pixel indices of an ``height x width`` map, seeded (all when fewer)."""
    n = height * width
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


def soft_neighbourhood_density(probs, pixels=256, seed=0, temperature=SND_TEMPERATURE) -> float:
    """SND of ``probs`` (N, H, W, K): ``pixels`` pixels sampled per image (seed + image index), the
    density computed within each image, averaged over images."""
    probs = np.asarray(ops.convert_to_numpy(probs), np.float32)
    n, h, w, k = probs.shape
    values = []
    for i in range(n):
        idx = sample_pixels(h, w, pixels, seed + i)
        values.append(neighbourhood_density(probs[i].reshape(h * w, k)[idx], temperature))
    return float(np.mean(values))


class ScoreAccumulator:
    """Every score over batches of probabilities (N, H, W, K): entropy and SND averaged per image,
    the mean prediction pooled over all pixels, so batching does not change the result."""

    def __init__(self, pixels=256, seed=0):
        self.pixels, self.seed = int(pixels), int(seed)
        self.entropy_sum, self.pixel_count, self.images = 0.0, 0, 0
        self.mean_sum, self.snd = None, []

    def add(self, probs):
        probs = np.asarray(ops.convert_to_numpy(probs), np.float32)
        n, h, w, k = probs.shape
        ent = np.asarray(ops.convert_to_numpy(_entropy(probs)), np.float64)
        self.entropy_sum += float(ent.sum())
        self.pixel_count += n * h * w
        total = probs.reshape(-1, k).astype(np.float64).sum(0)
        self.mean_sum = total if self.mean_sum is None else self.mean_sum + total
        for i in range(n):
            idx = sample_pixels(h, w, self.pixels, self.seed + self.images + i)
            self.snd.append(neighbourhood_density(probs[i].reshape(h * w, k)[idx]))
        self.images += n

    def result(self) -> dict:
        mean_entropy_ = self.entropy_sum / self.pixel_count
        marginal = self.mean_sum / self.pixel_count
        marginal_entropy = float(-(marginal * np.log(np.maximum(marginal, 1e-12))).sum())
        return {
            "entropy": mean_entropy_,
            "infomax": mean_entropy_ - marginal_entropy,
            "snd": float(np.mean(self.snd)),
        }


def choose(rows, score) -> int:
    """Index of the row ``score`` chooses (``last``: the final weights, the last row); ties: the later."""
    if score == "last":
        return len(rows) - 1
    sign = 1.0 if HIGHER_IS_BETTER[score] else -1.0
    best = max(range(len(rows)), key=lambda i: (sign * rows[i][score], i))
    return best


def kendall_tau(a, b) -> float:
    """Kendall's tau-b between two sequences (NaN when either is constant)."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def agreement(rows, scores=SCORES) -> dict:
    """Per score (and ``last``) with ``miou`` in every row: Kendall's tau of the score (oriented so
    higher is better) with mIoU, the chosen row's mIoU and the selection gap (best mIoU minus it)."""
    miou = [r["miou"] for r in rows]
    best = max(miou)
    out = {}
    for s in ("last", *scores):
        i = choose(rows, s)
        tau = None
        if s != "last":
            sign = 1.0 if HIGHER_IS_BETTER[s] else -1.0
            tau = kendall_tau([sign * r[s] for r in rows], miou)
        out[s] = {"tau": tau, "chosen_step": rows[i]["step"], "miou": miou[i], "gap": best - miou[i]}
    out["oracle"] = {"chosen_step": rows[int(np.argmax(miou))]["step"], "miou": best, "gap": 0.0}
    return out


def target_subset(spec, images, seed, folder):
    """``spec`` restricted to ``images`` target images drawn with ``seed`` (a list file in ``folder``)."""
    import os

    paths = spec.list_files()[0]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(int(images), len(paths)), replace=False))
    os.makedirs(folder, exist_ok=True)
    list_file = os.path.join(folder, f"target_subset_{seed}_{len(chosen)}.txt")
    with open(list_file, "w") as f:
        f.write("".join(os.path.abspath(paths[i]) + "\n" for i in chosen))
    return spec.replace(list_file=list_file, label_dir=None)  # images only: no label is read


def score_segmentor(segmentor, spec, size, batch_size=8, pixels=256, seed=0) -> dict:
    """Every score of ``segmentor`` on the (unlabelled) images of ``spec`` resized to ``size``."""
    from keras_fada import evaluation
    from keras_fada.data import make_inference_dataset

    acc = ScoreAccumulator(pixels, seed)
    for images, _paths in make_inference_dataset(spec, batch_size, size=tuple(size)):
        images = ops.convert_to_numpy(images).astype("float32")
        acc.add(evaluation.predict_probabilities(segmentor, images, images.shape[1:3]))
    return acc.result()


def select_run(cfg, run_dir, stage="adapt", score="last", images=64, pixels=256, seed=0, labels=True,
               report=print) -> dict:  # fmt: skip
    """Scores every snapshot of ``stage`` in ``run_dir`` (the final weights the last row) on a seeded
    subset of target train; with ``labels`` and a labelled target val also its mIoU and, per score,
    :func:`agreement`. Returns the selection (checkpoint paths relative to ``run_dir``)."""
    import os

    from keras_fada import evaluation
    from keras_fada.training import RunError, build, tasks
    from keras_fada.training import run_dir as R

    found = R.snapshots(run_dir, stage)
    if not found:
        raise RunError(
            f"run {run_dir!r} has no snapshots or weights of stage {stage}: train it first "
            "(snapshots need keep_snapshots != 0)"
        )
    specs = tasks.task_specs(cfg)
    k, batch = int(cfg["num_classes"]), int(cfg["eval"]["batch_size"])
    subset = target_subset(specs["target_train"], images, seed, os.path.join(R.stage_dir(run_dir, stage)))
    with_labels = bool(labels) and specs["target_val"].has_labels
    segmentor, rows = None, []
    for step, path in found:
        if segmentor is None:
            segmentor = build.load_segmentor(path, cfg["backbone"], k)
        else:
            build.load_weights(segmentor, path, cfg["backbone"], k)
        row = {"step": step, "checkpoint": os.path.relpath(path, run_dir)}
        row.update(score_segmentor(segmentor, subset, cfg["data"]["target_size"], batch, pixels, seed))
        if with_labels:
            conf = evaluation.evaluate_dataset(
                segmentor, specs["target_val"], k, size=cfg[stage]["eval_size"], batch_size=batch
            )
            row["miou"] = float(tasks.reported_scores(cfg["task"], conf)["miou"])
        rows.append(row)
        report(row)
    chosen = rows[choose(rows, score)]
    result = {
        "stage": stage, "score": score, "images": len(subset), "pixels": int(pixels), "seed": int(seed),
        "rows": rows, "chosen": {"step": chosen["step"], "checkpoint": chosen["checkpoint"]},
    }  # fmt: skip
    if with_labels:
        result["agreement"] = agreement(rows)
    return result
