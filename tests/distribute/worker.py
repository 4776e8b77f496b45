"""Two FADA steps on 2 devices of the backend named by KERAS_BACKEND (and a segmentation trainer's
BatchNorm statistics, the mixed_float16 overflow), written to an .npz for
tests/distribute/test_data_parallel.py: TensorFlow on 2 logical CPU devices, JAX with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (set by conftest.py), torch as two gloo
processes (rank 0 writes)."""

import os
import sys

CASES = [("soft", 1), ("hard", 2)]  # (encoder mode, accumulation_steps)


def run(out_path):
    import keras
    import numpy as np

    from keras_fada.training import distribute
    from tests.distribute import common

    results = moving_statistics()  # first: a segmentation step, then FADA's under a new engine scope
    for mode, steps in CASES:
        cfg = {"devices": 2, "accumulation_steps": steps}
        with distribute.engine(cfg):
            model = common.model(mode, accumulation_steps=steps)
            logs, params = common.train(model, distribute.prepare(cfg, model, common.dataset()))
        for name, value in params.items():
            results[f"{mode}{steps}/w/{name}"] = value
        for name, value in logs.items():
            results[f"{mode}{steps}/log/{name}"] = np.float64(value)
    results.update(overflow_on_one_replica())
    if distribute.rank() == 0:
        np.savez(out_path, **results)
    del keras


def moving_statistics():
    """A segmentation trainer whose first layer is a BatchNorm on the images, ``common.STEPS`` steps
    on 2 devices: every device's copy of the moving statistics (``bn/mean``, ``bn/var``)."""
    import keras

    from keras_fada.models.fada import SegmentationTrainer
    from keras_fada.training import distribute
    from tests.distribute import common

    cfg = {"devices": 2, "accumulation_steps": 1}
    with distribute.engine(cfg):
        keras.utils.set_random_seed(5)
        trainer = SegmentationTrainer(common.bn_segmentor())
        trainer.compile()
        b = common.batch()
        data = common.tf_dataset((b["source_images"], b["source_labels"]))
        trainer.fit(distribute.prepare(cfg, trainer, data), epochs=1, steps_per_epoch=common.STEPS, verbose=0)
    bn = trainer.segmentor.feature_extractor.get_layer("bn")
    return {"bn/mean": _per_device(bn.moving_mean), "bn/var": _per_device(bn.moving_variance)}


def _per_device(variable):
    """``(devices, ...)``: each device's copy of a (replicated) variable."""
    import keras
    import numpy as np

    value = variable.value
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return np.stack([v.numpy() for v in value.values])
    if backend == "jax":
        return np.stack([np.asarray(s.data) for s in value.addressable_shards])
    import torch

    parts = [torch.empty_like(value) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, value.detach().contiguous())
    return np.stack([p.cpu().numpy() for p in parts])


def overflow_on_one_replica(value=1e5):
    """mixed_float16: one step whose target images overflow float16 on the second replica only;
    the start and end weights and the loss-scale state."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_fada.training import distribute
    from tests.distribute import common
    from tests.support import fada_fixtures as fx

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        cfg = {"devices": 2, "accumulation_steps": 1}
        with distribute.engine(cfg):
            model = common.model("soft")
            start = fx.model_params(model)
            batch = common.batch()
            batch["target_images"][2:] = value  # > 65504: inf in float16, on the second replica
            data = distribute.prepare(cfg, model, tf.data.Dataset.from_tensors(batch).repeat())
            model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    opt = model.optimizer
    results = {f"f16/start/{n}": v for n, v in start.items()}
    results.update({f"f16/w/{n}": v for n, v in fx.model_params(model).items()})
    results["f16/scale"] = np.float64(keras.ops.convert_to_numpy(opt.dynamic_scale))
    results["f16/steps"] = np.int64(keras.ops.convert_to_numpy(opt.iterations))
    results["f16/updates"] = np.array(
        [keras.ops.convert_to_numpy(o.iterations) for o in model.stage_optimizers.values()]
    )
    return results


def _torch_rank(rank, out_path, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    import torch

    torch.set_num_threads(1)  # as torchrun does for several processes on one host
    from keras_fada.training import distribute

    distribute.setup({"devices": 2}, stages=[])
    run(out_path)


def main(out_path):
    backend = os.environ["KERAS_BACKEND"]
    if backend == "torch":
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_torch_rank, args=(out_path, port), nprocs=2, join=True)
        return
    from keras_fada.training import distribute

    distribute.setup({"devices": 2}, stages=[])
    run(out_path)


if __name__ == "__main__":
    main(sys.argv[1])
