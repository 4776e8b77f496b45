"""The FADA training model: one iteration against a NumPy twin, order/detachment, schedules."""

import keras
import numpy as np
import pytest

import keras_fada
from keras_fada.optimizers import official_optimizers
from tests.support import fada_fixtures as fx
from tests.support import numpy_reference as ref


def test_two_iterations_match_numpy_reference():
    model = fx.tiny_fada()
    batch = fx.tiny_batch()
    before = fx.model_params(model)
    want_params, want_losses = fx.reference_iterations(before, batch, steps=2)
    got_losses = fx.train_steps(model, batch, steps=2)
    after = fx.model_params(model)
    for step, (got, want) in enumerate(zip(got_losses, want_losses, strict=True)):
        for name in ("seg_loss", "adv_loss", "d_loss"):
            assert got[name] == pytest.approx(want[name], rel=1e-5), (step, name)
    for name in before:
        np.testing.assert_allclose(
            after[name] - before[name], want_params[name] - before[name], rtol=2e-3, atol=2e-6, err_msg=name
        )


def test_generator_update_leaves_discriminator_alone_and_classifier_gets_no_target_gradient():
    """All source pixels ignored -> L_seg = 0: C must not move (no weight decay), F must (L_adv)."""
    model = fx.tiny_fada()
    opts = official_optimizers(base_lr=0.01, base_lr_d=0.0, max_iter=10, weight_decay=0.0)
    model.compile(**opts)
    batch = fx.tiny_batch()
    batch["source_labels"][:] = 255
    before = fx.model_params(model)
    fx.train_steps(model, batch, steps=1)
    after = fx.model_params(model)
    for name in before:
        moved = np.abs(after[name] - before[name]).max()
        if name[0] in "cd":  # classifier: no target gradient; D: learning rate 0
            assert moved == 0.0, name
    assert np.abs(after["f_k"] - before["f_k"]).max() > 1e-6


def test_discriminator_learns_from_pre_update_features():
    """D's step uses grad L_D at the *old* F (official: detached features from before F's step).

    D gets plain SGD at lr 1 here so that its update is exactly minus its gradient; F moves a lot
    (lr 0.5) so that the gradient at the updated features is clearly different.
    """
    model = fx.tiny_fada()
    opts = official_optimizers(base_lr=0.5, max_iter=10, weight_decay=0.0)
    opts["discriminator_optimizer"] = keras_fada.optimizers.TorchSGD(1.0, momentum=0.0)
    model.compile(**opts)
    batch = fx.tiny_batch()
    before = fx.model_params(model)
    fx.train_steps(model, batch, steps=1)
    after = fx.model_params(model)
    want = fx.discriminator_gradient(before, batch)
    stale = fx.discriminator_gradient({**before, **{k: v for k, v in after.items() if k[0] in "fc"}}, batch)
    for name in want:
        got = before[name] - after[name]
        np.testing.assert_allclose(got, want[name], rtol=1e-3, atol=1e-7, err_msg=name)
    gap = max(np.abs(stale[n] - want[n]).max() / np.abs(want[n]).max() for n in want)
    assert gap > 1e-2, "the test cannot tell pre- from post-update features"


def test_poly_schedules_for_all_three_optimizers():
    model = fx.tiny_fada()
    for step in (0, 1, 3, 7):
        lrs = model.learning_rates(step)
        assert lrs["lr"] == pytest.approx(ref.poly_lr(0.01, step, 10), rel=1e-6)
        assert lrs["lr_classifier"] == pytest.approx(ref.poly_lr(0.1, step, 10), rel=1e-6)
        assert lrs["lr_d"] == pytest.approx(ref.poly_lr(0.01, step, 10), rel=1e-6)
    assert model.learning_rates(12)["lr"] == 0.0  # past max_iter
    fx.train_steps(model, fx.tiny_batch(), steps=3)
    assert model.learning_rates()["lr_d"] == pytest.approx(ref.poly_lr(0.01, 3, 10), rel=1e-6)
    assert [int(o.iterations) for o in model.stage_optimizers.values()] == [3, 3, 3]


def test_default_compile_is_the_official_recipe():
    model = keras_fada.FADA(fx.tiny_segmentor())
    model.compile()
    lrs = model.learning_rates(0)
    assert lrs == pytest.approx({"lr": 2.5e-4, "lr_classifier": 2.5e-3, "lr_d": 1e-4})
    assert model.learning_rates(40000)["lr"] == pytest.approx(2.5e-4 * (1 - 40000 / 62500) ** 0.9)
    fe_opt = model.stage_optimizers["optimizer"]
    assert isinstance(fe_opt, keras_fada.optimizers.TorchSGD) and fe_opt.l2 == 5e-4 and fe_opt.momentum == 0.9
    d_opt = model.stage_optimizers["discriminator_optimizer"]
    assert (d_opt.beta_1, d_opt.beta_2) == (0.9, 0.99)
    assert model.lambda_adv == 0.001 and model.temperature == 1.8 and model.encoder.clip == 0.9


def test_single_optimizer_gets_a_10x_classifier_copy():
    model = keras_fada.FADA(fx.tiny_segmentor())
    model.compile(optimizer=keras_fada.optimizers.TorchSGD(keras_fada.optimizers.poly_schedule(1e-3, 100)))
    assert model.learning_rates(0)["lr_classifier"] == pytest.approx(1e-2)


@pytest.mark.parametrize("mode", ["hard", "binary"])
def test_ablation_modes_train(mode):
    model = fx.tiny_fada(mode)
    logs = fx.train_steps(model, fx.tiny_batch(), steps=2)
    assert all(np.isfinite(v) for step in logs for v in step.values())
    if mode == "binary":
        assert model.discriminator.num_classes == 1


def test_feature_resolution_variant_runs_and_differs():
    a = fx.train_steps(fx.tiny_fada(), fx.tiny_batch(), steps=1)[0]
    b = fx.train_steps(fx.tiny_fada(discriminator_resolution="feature"), fx.tiny_batch(), steps=1)[0]
    assert a["seg_loss"] == pytest.approx(b["seg_loss"], rel=1e-6)  # same segmentation path
    assert a["d_loss"] != pytest.approx(b["d_loss"], rel=1e-4)


def test_mismatched_discriminator_is_rejected():
    with pytest.raises(ValueError, match="knowledge channels"):
        keras_fada.FADA(fx.tiny_segmentor(), keras_fada.FineGrainedDiscriminator(5))


def test_predict_returns_logits_at_image_resolution():
    model = fx.tiny_fada()
    images = np.random.rand(3, 8, 12, 3).astype("float32")
    out = model.predict(images, verbose=0)
    assert out.shape == (3, 8, 12, fx.K)
    low = keras.ops.convert_to_numpy(model.segmentor(images))
    np.testing.assert_allclose(out, ref.resize_align_corners(low, 8, 12), atol=1e-5)


def test_keras_file_round_trip(tmp_path):
    model = fx.tiny_fada("hard")
    fx.train_steps(model, fx.tiny_batch(), steps=1)
    path = tmp_path / "fada.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_fada.FADA) and loaded.encoder.mode == "hard"
    images = np.random.rand(2, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    # optimiser state travels too: the next step is the same on both
    a = fx.train_steps(model, fx.tiny_batch(1), steps=1)[0]
    b = fx.train_steps(loaded, fx.tiny_batch(1), steps=1)[0]
    assert a == pytest.approx(b, rel=1e-5)
    np.testing.assert_allclose(fx.model_params(loaded)["d0_k"], fx.model_params(model)["d0_k"], atol=1e-6)


def test_mixed_bfloat16_tracks_float32():
    """bf16 compute (AVX512-BF16 on CPU, tensor cores on GPU): losses stay within 1% of float32 over
    three steps; logits are upsampled and losses computed in float32 either way."""
    runs = {}
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.config.set_dtype_policy(policy)
            model = fx.tiny_fada()
            runs[policy] = fx.train_steps(model, fx.tiny_batch(), steps=3)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.segmentor.feature_extractor.layers[-1].compute_dtype == "bfloat16"
    for f32, bf16 in zip(runs["float32"], runs["mixed_bfloat16"], strict=True):
        for name in ("seg_loss", "adv_loss", "d_loss"):
            assert bf16[name] == pytest.approx(f32[name], rel=1e-2), name


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="XLA via jit_compile on TensorFlow")
def test_xla_step_equals_the_default_step():
    losses = []
    for jit in (True, False):
        model = fx.tiny_fada()
        opts = official_optimizers(base_lr=0.01, base_lr_d=0.01, max_iter=10)
        model.compile(jit_compile=jit, **opts)
        losses.append(fx.train_steps(model, fx.tiny_batch(), steps=2)[-1])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert not fx.tiny_fada().jit_compile  # "auto" leaves XLA off on CPU: 3-5x slower there


@pytest.mark.parametrize("resolution", ["label", "feature"])
def test_two_pass_step_equals_single_pass(resolution):
    """``two_pass`` back-propagates L_seg before the target pass; losses
    and every updated weight must equal the single backward pass, on every backend."""
    logs, params = [], []
    for two_pass in (False, True):
        model = fx.tiny_fada(discriminator_resolution=resolution, two_pass=two_pass)
        logs.append(fx.train_steps(model, fx.tiny_batch(), steps=2))
        params.append(fx.model_params(model))
    for a, b in zip(logs[0], logs[1], strict=True):
        for key in ("seg_loss", "adv_loss", "d_loss", "loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    assert params[0].keys() == params[1].keys()
    for name, value in params[0].items():
        np.testing.assert_allclose(params[1][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    start = fx.model_params(fx.tiny_fada(discriminator_resolution=resolution))
    assert any(not np.allclose(start[n], v) for n, v in params[1].items())  # the steps did update


def test_two_pass_step_keeps_weight_regularizers():
    """Weight penalties enter the two-pass step once (with the target pass), as in the single pass."""
    params = []
    for two_pass in (False, True):
        model = fx.tiny_fada(two_pass=two_pass)
        model.segmentor.feature_extractor.get_layer("f_conv").kernel.regularizer = keras.regularizers.L2(0.5)
        model.discriminator.hidden[0].kernel.regularizer = keras.regularizers.L2(0.5)
        logs = fx.train_steps(model, fx.tiny_batch(), steps=2)
        params.append(fx.model_params(model))
    for name, value in params[0].items():
        np.testing.assert_allclose(params[1][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    plain = fx.tiny_fada()
    fx.train_steps(plain, fx.tiny_batch(), steps=2)
    assert not np.allclose(fx.model_params(plain)["f_k"], params[1]["f_k"])  # the penalty acted
    penalties = logs[-1]["loss"] - logs[-1]["seg_loss"] - fx.CONFIG["lambda_adv"] * logs[-1]["adv_loss"]
    assert penalties - logs[-1]["d_loss"] > 1e-3
