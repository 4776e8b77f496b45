"""Label-free checkpoint selection: scores of a segmentor's softmax predictions on unlabelled target
images (issue 25), so a snapshot can be chosen without target labels, and how well each score ranks
snapshots where labels exist (Kendall's tau with mIoU, the selection gap).

Scores (each oriented by :data:`HIGHER_IS_BETTER`):
- ``entropy``: mean per-pixel prediction entropy (lower: more confident).
- ``infomax``: mean entropy minus the entropy of the mean prediction (lower: confident *and* diverse).
- ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): per image, the softmax (temperature
  0.05) of the cosine similarities of sampled pixels' L2-normalised probability vectors, self excluded,
  then the mean entropy of each row (higher: denser neighbourhoods).
- ``discriminator`` (adaptation only): the confusion of the snapshot's own fine-grained discriminator,
  the mass it puts on the source half for target features (higher: target features taken for source);
  see :func:`discriminator_confusion`. None for stages without a discriminator.
"""

from __future__ import annotations

import os

import numpy as np
from keras import ops

PROBABILITY_SCORES = ("entropy", "infomax", "snd")  # of the segmentor's predictions alone
SCORES = (*PROBABILITY_SCORES, "discriminator")
HIGHER_IS_BETTER = {"entropy": False, "infomax": False, "snd": True, "discriminator": True}
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


def source_mass(logits):
    """Per pixel, the probability D gives the source half: the softmax of its ``2K`` logits
    ``[source K | target K]`` (..., 2K) taken jointly, as in Eq. 5, summed over the first K."""
    p = ops.softmax(ops.cast(ops.convert_to_tensor(logits), "float32"), axis=-1)
    return ops.sum(p[..., : ops.shape(p)[-1] // 2], axis=-1)


def discriminator_confusion(logits) -> float:
    """D's target/source confusion on target features: D trained with cross-entropy to ``[a_s; 0]`` /
    ``[0; a_t]`` models ``P(d, c | f)``, so the mean over target pixels of ``P(d = source | f_t) =
    sum_k P(d = source, c = k | f_t)`` is 0 where D tells every target pixel apart and grows as the
    target features pass for source (Eq. 6's aim). ``logits``: D's outputs (N, h, w, 2K) on target."""
    return float(ops.convert_to_numpy(ops.mean(source_mass(logits))))


class ConfusionAccumulator:
    """:func:`discriminator_confusion` over batches of D's target logits (all pixels weigh the same)."""

    def __init__(self):
        self.total, self.pixels = 0.0, 0

    def add(self, logits):
        mass = np.asarray(ops.convert_to_numpy(source_mass(logits)), np.float64)
        self.total += float(mass.sum())
        self.pixels += mass.size

    def result(self) -> float:
        return self.total / self.pixels


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
    higher is better) with mIoU, the chosen row's mIoU and the selection gap (best mIoU minus it);
    a score missing (None) in some row is left out."""
    miou = [r["miou"] for r in rows]
    best = max(miou)
    out = {}
    for s in ("last", *(s for s in scores if all(r.get(s) is not None for r in rows))):
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
    paths = spec.list_files()[0]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(int(images), len(paths)), replace=False))
    os.makedirs(folder, exist_ok=True)
    list_file = os.path.join(folder, f"target_subset_{seed}_{len(chosen)}.txt")
    with open(list_file, "w") as f:
        f.write("".join(os.path.abspath(paths[i]) + "\n" for i in chosen))
    return spec.replace(list_file=list_file, label_dir=None)  # images only: no label is read


def score_segmentor(segmentor, spec, size, batch_size=8, pixels=256, seed=0, discriminator=None) -> dict:
    """Every score of ``segmentor`` on the (unlabelled) images of ``spec`` resized to ``size``; the
    ``discriminator`` score from D applied to the segmentor's features (at their resolution), None
    without one."""
    from keras_fada import evaluation
    from keras_fada.data import make_inference_dataset

    acc = ScoreAccumulator(pixels, seed)
    confusion = None if discriminator is None else ConfusionAccumulator()
    for images, _paths in make_inference_dataset(spec, batch_size, size=tuple(size)):
        images = ops.convert_to_numpy(images).astype("float32")
        acc.add(evaluation.predict_probabilities(segmentor, images, images.shape[1:3]))
        if confusion is not None:
            confusion.add(discriminator(segmentor.feature_extractor.predict_on_batch(images)))
    return {**acc.result(), "discriminator": None if confusion is None else confusion.result()}


def snapshots_to_score(run_dir, stage="adapt", score="last") -> list:
    """``(step, segmentor path, discriminator path or None)`` of every snapshot of ``stage`` (the final
    weights last); only files are read, so the command line checks a run with it before any work. A
    :class:`RunError` for a stage without snapshots, and for ``score == "discriminator"`` on a stage
    without a discriminator (only adapt trains one) or a snapshot without its own (an older run)."""
    from keras_fada.training import RunError
    from keras_fada.training import run_dir as R

    if score == "discriminator" and stage != "adapt":
        raise RunError(
            f"--score discriminator needs a discriminator, which stage {stage} does not train: use --stage adapt"
        )
    found = R.snapshots(run_dir, stage)
    if not found:
        raise RunError(
            f"run {run_dir!r} has no snapshots or weights of stage {stage}: train it first "
            "(snapshots need keep_snapshots != 0)"
        )
    beside = [R.discriminator_beside(path) if stage == "adapt" else None for _step, path in found]
    rows = [
        (step, path, d if d and os.path.isfile(d) else None)
        for (step, path), d in zip(found, beside, strict=True)
    ]
    missing = [step for step, _path, d in rows if d is None]
    if score == "discriminator" and missing:
        raise RunError(
            f"--score discriminator: the adapt snapshots of steps {', '.join(map(str, missing))} in "
            f"{run_dir!r} have no discriminator saved beside them (a run older than the discriminator "
            "snapshots); choose another --score"
        )
    return rows


def select_run(cfg, run_dir, stage="adapt", score="last", images=64, pixels=256, seed=0, labels=True,
               report=print) -> dict:  # fmt: skip
    """Scores every snapshot of ``stage`` in ``run_dir`` (the final weights the last row) on a seeded
    subset of target train; with ``labels`` and a labelled target val also its mIoU and, per score,
    :func:`agreement`. Returns the selection (checkpoint paths relative to ``run_dir``)."""
    from keras_fada import evaluation
    from keras_fada.training import build, tasks
    from keras_fada.training import run_dir as R

    found = snapshots_to_score(run_dir, stage, score)
    specs = tasks.task_specs(cfg)
    k, batch = int(cfg["num_classes"]), int(cfg["eval"]["batch_size"])
    subset = target_subset(specs["target_train"], images, seed, os.path.join(R.stage_dir(run_dir, stage)))
    with_labels = bool(labels) and specs["target_val"].has_labels
    segmentor, rows = None, []
    for step, path, d_path in found:
        if segmentor is None:
            segmentor = build.load_segmentor(path, cfg["backbone"], k)
        else:
            build.load_weights(segmentor, path, cfg["backbone"], k)
        disc = build.load_discriminator(d_path, cfg, segmentor) if d_path else None
        row = {"step": step, "checkpoint": os.path.relpath(path, run_dir)}
        row.update(score_segmentor(segmentor, subset, cfg["data"]["target_size"], batch, pixels, seed, disc))
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
