"""Soak test of crash-safe training: N seeded random SIGKILLs of one synthetic adaptation run, each
followed by ``--resume``; reports the kills survived and the final weight difference to an
uninterrupted run (0.0 = bit-identical).

Half of the kills land at a random moment (a random delay after the stage starts: training, a
backup write, the evaluation), half at a random fault-injection point (inside a backup's weights
write, between its two files, after its rename, between two backups); the last one lands after
training, before the report.

    python benchmarks/soak_resume.py --kills 20 --steps 150 --period 5 --max-delay 6 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--period", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=6.0, help="Longest random delay before a kill (s).")
    p.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend

    from keras_fada import config as C
    from keras_fada.training import tasks
    from tests.support import crash_runs as cr

    work = args.workdir or tempfile.mkdtemp(prefix="soak-")
    root = os.path.join(work, "data")
    tasks.task_specs(C.load_config("synthetic", overrides=[*cr.TINY, f"data.root={root}"]))
    init = cr.initial_checkpoint(os.path.join(work, "init.weights.h5"))
    ref_dir, out = os.path.join(work, "reference"), os.path.join(work, "killed")
    t0 = time.perf_counter()
    reference = cr.start(cr.train_command(root, ref_dir, init, args.steps, args.period), args.backend)
    rng = random.Random(args.seed)
    points = ["weights", "between", "rename", "step"]  # and the last kill before the report
    kills, log, started = 0, [], False
    while kills < args.kills:
        cmd = cr.train_command(root, out, init, args.steps, args.period, resume=started)
        if rng.random() < 0.5:
            kind = "timing"
            proc = cr.start(cmd, args.backend)
            delay = rng.uniform(0.0, args.max_delay)
            for line in proc.stdout:  # the delay counts from the stage's start, past the imports
                if line.startswith(("[adapt]", "Error")):
                    break
            try:
                proc.wait(timeout=delay)
            except Exception:  # noqa: BLE001 - still running: kill it now
                proc.kill()
                proc.wait()
        else:
            point = "report" if kills == args.kills - 1 else rng.choice(points)
            n = rng.randint(1, 2) if point in ("weights", "between", "rename") else ""
            if point == "step":  # a step after the latest backup, so that the kill happens
                n = min(args.steps, _latest_step(out) + rng.randint(1, 2 * args.period))
            kind = f"{point}:{n}"
            proc = cr.start(cmd, args.backend, fault=kind)
            proc.wait()
        started = True
        if proc.returncode == -9:
            kills += 1
        elif proc.returncode == 0:  # finished before the kill: a run has only so many moments to kill
            log.append({"kind": kind, "exit": 0})
            break
        else:
            raise SystemExit(f"run failed with exit {proc.returncode}: {proc.stdout.read()[-2000:]}")
        state = _latest_step(out)
        log.append({"kind": kind, "exit": proc.returncode, "backup_step": state})
        print(f"kill {kills:2d} ({kind}): latest backup at step {state}", flush=True)
    code, text = cr.run(cr.train_command(root, out, init, args.steps, args.period, resume=True), args.backend)
    if code != 0:
        raise SystemExit(f"final --resume failed with exit {code}: {text[-2000:]}")
    ref_text, _ = reference.communicate()
    if reference.returncode != 0:
        raise SystemExit(f"reference run failed: {ref_text[-2000:]}")
    ours = json.load(open(os.path.join(out, "adapt", "metrics.json")))
    theirs = json.load(open(os.path.join(ref_dir, "adapt", "metrics.json")))
    result = {
        "backend": args.backend,
        "kills": kills,
        "survived": kills,  # every kill was followed by a resume that reached the end
        "steps": [ours["steps"], theirs["steps"]],
        "miou": [ours.get("miou"), theirs.get("miou")],
        "max_rel_weight_diff": cr.max_relative_difference(
            os.path.join(out, "adapt", "segmentor.weights.h5"),
            os.path.join(ref_dir, "adapt", "segmentor.weights.h5"),
        ),
        "max_abs_weight_diff": cr.max_abs_difference(
            os.path.join(out, "adapt", "segmentor.weights.h5"),
            os.path.join(ref_dir, "adapt", "segmentor.weights.h5"),
        ),
        "wall_s": round(time.perf_counter() - t0, 1),
        "timing_kills": sum(1 for e in log if e["kind"] == "timing" and e["exit"] == -9),
    }
    print(json.dumps(result))
    return result


def _latest_step(out):
    backup = os.path.join(out, "adapt", "backup")
    if not os.path.isdir(backup):
        return 0
    steps = [int(n[5:]) for n in os.listdir(backup) if n.startswith("ckpt-") and n[5:].isdigit()]
    return max(steps, default=0)


if __name__ == "__main__":
    main()
