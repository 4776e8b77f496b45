"""Run a test module in a fresh interpreter (its own backend, devices or flags) that writes arrays to
an .npz file, and read them back; or start it (or any command) now and wait for it later."""

import os
import signal
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Background:
    """``args`` started now from the repository root with ``env`` added, in a session of its own
    (its children too: torchrun's ranks), its output in files beside ``log_prefix`` (a pipe that
    nobody reads yet would stall it). ``wait()``: ``(returncode, stdout, stderr)``."""

    def __init__(self, args, env: dict, log_prefix, timeout: float = 600):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
        self.backend = env.get("KERAS_BACKEND")
        self._logs = [open(f"{log_prefix}.{name}", "w+") for name in ("stdout", "stderr")]  # noqa: SIM115
        self._proc = subprocess.Popen(
            [str(a) for a in args], cwd=ROOT, env=env, stdout=self._logs[0], stderr=self._logs[1],
            text=True, start_new_session=True,
        )  # fmt: skip
        self._timeout = timeout
        self._result = None

    def wait(self):
        if self._result is None:
            try:
                code = self._proc.wait(timeout=self._timeout)
            finally:
                self.stop()
            texts = []
            for f in self._logs:
                f.seek(0)
                texts.append(f.read())
                f.close()
            self._result = (code, *texts)
        return self._result

    def stop(self):
        """Ends the command and its children if they still run (a test that never waited)."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


class StartedNpz:
    """``python -m module out`` started now (:class:`Background`); ``result()`` waits for its arrays."""

    def __init__(self, module: str, out, env: dict, timeout: float = 600):
        self.module, self.out = module, out
        self.run = Background([sys.executable, "-m", module, out], env, out, timeout)

    def result(self) -> dict:
        code, _, stderr = self.run.wait()
        assert code == 0, f"{self.module} ({self.run.backend}) failed:\n{stderr[-3000:]}"
        return dict(np.load(self.out))


def run_to_npz(module: str, out, env: dict, timeout: float = 600) -> dict:
    """``python -m module out`` from the repository root with ``env`` added; its arrays."""
    return StartedNpz(module, out, env, timeout).result()
