"""Two FADA steps on 2 devices of the backend named by KERAS_BACKEND, written to an .npz for
tests/distribute/test_data_parallel.py: TensorFlow on 2 logical CPU devices, JAX with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (set by the test), torch as two gloo
processes (rank 0 writes)."""

import os
import sys

CASES = [("soft", 1), ("hard", 2)]  # (encoder mode, accumulation_steps)


def run(out_path):
    import keras
    import numpy as np

    from keras_fada.training import distribute
    from tests.distribute import common

    results = {}
    for mode, steps in CASES:
        cfg = {"devices": 2, "accumulation_steps": steps}
        with distribute.engine(cfg):
            model = common.model(mode, accumulation_steps=steps)
            logs, params = common.train(model, distribute.prepare(cfg, model, common.dataset()))
        for name, value in params.items():
            results[f"{mode}{steps}/w/{name}"] = value
        for name, value in logs.items():
            results[f"{mode}{steps}/log/{name}"] = np.float64(value)
    if distribute.rank() == 0:
        np.savez(out_path, **results)
    del keras


def _torch_rank(rank, out_path, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
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
