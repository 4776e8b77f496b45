"""Run a test module in a fresh interpreter (its own backend, devices or flags) that writes arrays to
an .npz file, and read them back."""

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_to_npz(module: str, out, env: dict, timeout: float = 600) -> dict:
    """``python -m module out`` from the repository root with ``env`` added; its arrays."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    proc = subprocess.run(
        [sys.executable, "-m", module, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{module} ({env.get('KERAS_BACKEND')}) failed:\n{proc.stderr[-3000:]}"
    return dict(np.load(out))
