"""Label-free selection scores (keras_fada.selection) against NumPy references written here."""

import itertools
import os

import numpy as np
import pytest

from keras_fada import selection as S
from keras_fada.training import run_dir as R


def _probs(shape, seed=0, sharp=3.0):
    logits = np.random.default_rng(seed).normal(size=shape) * sharp
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _entropy_np(p):
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def _snd_np(v, t=0.05):
    """Saito et al.'s neighbor_density: cosine similarities / T, self masked, row softmax, mean entropy."""
    v = v.astype(np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T / t
    np.fill_diagonal(sim, -np.inf)
    sim = np.exp(sim - sim.max(1, keepdims=True))
    sim /= sim.sum(1, keepdims=True)
    return _entropy_np(sim).mean()


def test_mean_entropy_and_information_maximisation_match_numpy():
    p = _probs((2, 4, 6, 5))
    p[0, 0, 0] = [1, 0, 0, 0, 0]  # 0 log 0 = 0
    flat = p.reshape(-1, 5).astype(np.float64)
    ent = _entropy_np(flat).mean()
    assert S.mean_entropy(p) == pytest.approx(ent, rel=1e-5)
    assert S.information_maximisation(p) == pytest.approx(ent - _entropy_np(flat.mean(0)), rel=1e-4, abs=1e-6)


def test_neighbourhood_density_matches_numpy():
    v = _probs((24, 7), seed=1, sharp=1.5)
    assert S.neighbourhood_density(v) == pytest.approx(_snd_np(v), rel=1e-4)
    assert S.neighbourhood_density(v, temperature=0.5) == pytest.approx(_snd_np(v, 0.5), rel=1e-4)


def test_snd_samples_pixels_per_image_and_the_accumulator_does_not_depend_on_batching():
    p = _probs((3, 5, 8, 4), seed=2)
    ref = np.mean(
        [_snd_np(p[i].reshape(-1, 4)[S.sample_pixels(5, 8, 16, 7 + i)]) for i in range(3)]
    )  # fmt: skip
    assert S.soft_neighbourhood_density(p, pixels=16, seed=7) == pytest.approx(ref, rel=1e-4)
    idx = S.sample_pixels(5, 8, 16, 7)
    assert len(set(idx.tolist())) == 16 and idx.max() < 40
    assert len(S.sample_pixels(2, 3, 100, 0)) == 6
    whole, parts = S.ScoreAccumulator(16, 7), S.ScoreAccumulator(16, 7)
    whole.add(p)
    parts.add(p[:2])
    parts.add(p[2:])
    a, b = whole.result(), parts.result()
    for k in S.PROBABILITY_SCORES:
        assert a[k] == pytest.approx(b[k], rel=1e-5)
    assert a["snd"] == pytest.approx(ref, rel=1e-4)
    assert a["entropy"] == pytest.approx(S.mean_entropy(p), rel=1e-5)
    assert a["infomax"] == pytest.approx(S.information_maximisation(p), rel=1e-4, abs=1e-6)


def _source_mass_np(logits):
    """D's probability of "source": softmax over all 2K channels [source K | target K], first K summed."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return p[..., : z.shape[-1] // 2].sum(-1)


def test_discriminator_confusion_matches_numpy_and_does_not_depend_on_batching():
    k = 5
    logits = (np.random.default_rng(3).normal(size=(3, 4, 6, 2 * k)) * 2.0).astype(np.float32)
    ref = _source_mass_np(logits).mean()
    assert S.discriminator_confusion(logits) == pytest.approx(ref, rel=1e-5)
    acc = S.ConfusionAccumulator()
    acc.add(logits[:1])
    acc.add(logits[1:])
    assert acc.result() == pytest.approx(ref, rel=1e-5)
    flat = np.zeros((1, 2, 2, 2 * k), np.float32)
    assert S.discriminator_confusion(flat) == pytest.approx(0.5)  # D cannot tell: half on each domain
    flat[..., k:] = 20.0  # D sure of "target", whatever the class
    assert S.discriminator_confusion(flat) < 1e-6
    one = np.array([[[[1.0, -1.0]]]], np.float32)  # the binary discriminator (K = 1): sigmoid(2)
    assert S.discriminator_confusion(one) == pytest.approx(1.0 / (1.0 + np.exp(-2.0)), rel=1e-5)


def _tau_np(a, b):
    """Kendall's tau-a (no ties): concordant minus discordant pairs over all pairs."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def test_choose_and_agreement_orient_each_score():
    rows = [
        {"step": 50, "entropy": 0.9, "infomax": -0.1, "snd": 2.0, "miou": 10.0},
        {"step": 100, "entropy": 0.5, "infomax": -0.3, "snd": 2.5, "miou": 14.0},
        {"step": 150, "entropy": 0.7, "infomax": -0.4, "snd": 1.0, "miou": 12.0},
        {"step": 200, "entropy": 0.8, "infomax": -0.2, "snd": 3.0, "miou": 11.0},
    ]
    assert [S.choose(rows, s) for s in ("last", "entropy", "infomax", "snd")] == [3, 1, 2, 3]
    a = S.agreement(rows)
    miou = np.array([r["miou"] for r in rows])
    assert a["entropy"]["tau"] == pytest.approx(_tau_np(-np.array([r["entropy"] for r in rows]), miou))
    assert a["snd"]["tau"] == pytest.approx(_tau_np(np.array([r["snd"] for r in rows]), miou))
    assert a["last"]["gap"] == pytest.approx(3.0) and a["infomax"]["gap"] == pytest.approx(2.0)
    assert a["oracle"] == {"chosen_step": 100, "miou": 14.0, "gap": 0.0}
    assert "discriminator" not in a  # absent from the rows: no agreement
    for r, d in zip(rows, (0.1, 0.3, 0.2, 0.05), strict=True):
        r["discriminator"] = d
    assert S.choose(rows, "discriminator") == 1  # the most confused D
    a = S.agreement(rows)
    assert a["discriminator"]["tau"] == pytest.approx(_tau_np(np.array([0.1, 0.3, 0.2, 0.05]), miou))
    assert a["discriminator"]["gap"] == 0.0
    rows[0]["discriminator"] = None  # a snapshot without its D: the score is left out
    assert "discriminator" not in S.agreement(rows)


def test_snapshots_lists_steps_and_the_final_weights_last(tmp_path):
    snaps = tmp_path / "adapt" / "snapshots"
    snaps.mkdir(parents=True)
    for step in (2, 1, 3):
        (snaps / f"segmentor_iter{step:06d}.weights.h5").write_bytes(b"")
    (snaps / "segmentor_iter000004.weights.h5.tmp").write_bytes(b"")
    assert [s for s, _ in R.snapshots(str(tmp_path), "adapt")] == [1, 2, 3]
    (tmp_path / "adapt" / "segmentor.weights.h5").write_bytes(b"")
    (tmp_path / "adapt" / "trained.json").write_text('{"steps": 3, "train_s": 1}')
    rows = R.snapshots(str(tmp_path), "adapt")
    assert [s for s, _ in rows] == [1, 2, 3]
    assert rows[-1][1] == os.path.join(str(tmp_path), "adapt", "segmentor.weights.h5")
    assert R.discriminator_beside(rows[0][1]) == str(snaps / "discriminator_iter000001.weights.h5")
    assert R.discriminator_beside(rows[-1][1]) == os.path.join(
        str(tmp_path), "adapt", "discriminator.weights.h5"
    )
