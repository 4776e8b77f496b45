"""keras-fada's FADA iteration on every backend against the PyTorch reference, in one invocation.

Runs ``../shared/reference/torch-reference/torch_fada_step.py`` (the plain-PyTorch copy of one
official ``train_adv.py`` iteration) and ``benchmarks/fada_step.py`` (keras-fada, full DeepLabV2-R101,
K=19, official recipe) as alternating subprocesses on the same sizes: for each size and round, the
reference first, then every (backend, precision). Before each run it waits for the machine to be
idle (as the reference's own driver did); each child marks the iterations that other processes
disturbed, and medians are over quiet iterations when there are any. The ratio of every keras-fada
configuration is to the reference's median of the same invocation.

By default (``--install extras``) each keras-fada process runs as in the install its backend needs,
``pip install keras-fada[<backend>]``: the optional backends it does not use are hidden
(``fada_step.py --without``), since Keras imports JAX whenever it is installed (RSS a torch process
never uses). ``--install all`` measures with everything this environment has, as the tables
dated before 2026-12-03 did.

Progress goes to stderr, one JSON line to stdout:

    python benchmarks/speed_vs_reference.py                                # 1+1 at 256x512 and 512x1024
    python benchmarks/speed_vs_reference.py --sizes 256x512 --backends tensorflow --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REFERENCE = os.path.join(
    HERE, "..", "..", "shared", "reference", "torch-reference", "torch_fada_step.py"
)


def idle_fraction(seconds: float) -> float:
    """Fraction of CPU time spent idle over the next ``seconds``."""

    def read():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return v[3] + v[4], sum(v)

    i0, t0 = read()
    time.sleep(seconds)
    i1, t1 = read()
    return (i1 - i0) / max(t1 - t0, 1)


def wait_for_quiet(window: float, timeout: float) -> float:
    """Waits until a ``window``-second stretch is ≥ 95% idle (or ``timeout`` passes); returns the wait."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if idle_fraction(window) >= 0.95:
            break
    return time.monotonic() - start


def run_child(cmd: list[str], env: dict, timeout: float) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"exit {proc.returncode}", "stderr_tail": tail}
    return json.loads(lines[-1])


def cpu_info() -> dict:
    """The CPU model and the vector extensions that decide which backend and precision are fast."""
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": model, "isa": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def native_bf16(cpu: dict) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu["isa"]))


OPTIONAL_BACKENDS = ("jax", "torch")


def reference_seconds(row: dict) -> float | None:
    return row.get("sec_per_iter_quiet_median") or row.get("sec_per_iter_median")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"], help="HxW, 1+1 images each")
    p.add_argument("--batch", type=int, default=1, help="images per domain")
    p.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["tensorflow:float32", "tensorflow:mixed_bfloat16", "jax:float32", "torch:float32"],
        help="backend:policy pairs to run (only those whose backend is in --backends)",
    )
    p.add_argument("--rounds", type=int, default=1, help="alternations of reference and keras-fada")
    p.add_argument("--iters", type=int, default=7, help="iterations per child, warm-up included")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reference", default=DEFAULT_REFERENCE, help="path to torch_fada_step.py")
    p.add_argument("--quiet-window", type=float, default=10.0, help="idle seconds wanted before each child")
    p.add_argument("--quiet-timeout", type=float, default=120.0)
    p.add_argument("--child-timeout", type=float, default=3600.0)
    p.add_argument(
        "--force-bf16",
        action="store_true",
        help="run bf16 configurations even on a CPU without native bf16 (AVX512_BF16 / AMX), "
        "where they are emulated and many times slower than float32",
    )
    p.add_argument(
        "--install",
        choices=["extras", "all"],
        default="extras",
        help="extras: each backend's process sees only what `pip install keras-fada[<backend>]` "
        "installs (the other optional backends hidden); all: whatever this environment has",
    )
    args = p.parse_args()

    if not os.path.exists(args.reference):
        p.error(f"reference script not found: {args.reference} (pass --reference)")
    configs = [tuple(c.split(":", 1)) for c in args.precisions]
    configs = [(b, prec) for b, prec in configs if b in args.backends]
    cpu = cpu_info()
    skipped = {}
    if not native_bf16(cpu) and not args.force_bf16:
        skipped = {
            f"{b}:{prec}": "no native bf16 on this CPU (--force-bf16 runs it)"
            for b, prec in configs
            if "bfloat16" in prec
        }
        configs = [(b, prec) for b, prec in configs if "bfloat16" not in prec]
    fada_step = os.path.join(HERE, "fada_step.py")

    def hide(backend: str) -> list[str]:
        # TensorFlow is a dependency of every install (tf.data); JAX and torch are optional extras.
        others = [b for b in OPTIONAL_BACKENDS if b != backend]
        return ["--without", *others] if args.install == "extras" else []

    common = ["--batch", str(args.batch), "--iters", str(args.iters), "--warmup", str(args.warmup)]
    t_all = time.perf_counter()
    runs = []
    for size in args.sizes:
        h, w = size.lower().split("x")
        hw = ["--height", h, "--width", w]
        for rnd in range(args.rounds):
            jobs = [("reference", "float32", [sys.executable, args.reference, *common, *hw])]
            jobs += [
                (b, prec, [sys.executable, fada_step, *common, *hw, "--precision", prec, *hide(b)])
                for b, prec in configs
            ]
            for impl, prec, cmd in jobs:
                env = dict(os.environ, KERAS_BACKEND=impl if impl != "reference" else "tensorflow")
                waited = wait_for_quiet(args.quiet_window, args.quiet_timeout)
                t0 = time.perf_counter()
                row = run_child(cmd, env, args.child_timeout)
                row.update(run_impl=impl, run_precision=prec, run_size=size, run_round=rnd)
                row.update(run_wall_s=round(time.perf_counter() - t0, 1), waited_for_quiet_s=round(waited, 1))
                runs.append(row)
                sec = reference_seconds(row) if impl == "reference" else row.get("s_per_iter_median")
                print(
                    f"[{size} round {rnd}] {impl}/{prec}: "
                    + (f"{sec:.3f} s/iter" if sec else row.get("error", "?"))
                    + f" (quiet {row.get('quiet_iters')}, peak RSS {row.get('peak_rss_mib', 0):.0f} MiB)",
                    file=sys.stderr,
                    flush=True,
                )

    results = {}
    for size in args.sizes:
        ref = [reference_seconds(r) for r in runs if r["run_size"] == size and r["run_impl"] == "reference"]
        ref = [s for s in ref if s]
        ref_rss = [
            r.get("peak_rss_mib") for r in runs if r["run_size"] == size and r["run_impl"] == "reference"
        ]
        ref_med = statistics.median(ref) if ref else None
        entry = {
            "reference": {
                "s_per_iter": round(ref_med, 3) if ref_med else None,
                "peak_rss_mib": round(max(x for x in ref_rss if x), 0) if any(ref_rss) else None,
            }
        }
        for b, prec in configs:
            mine = [
                r for r in runs if r["run_size"] == size and r["run_impl"] == b and r["run_precision"] == prec
            ]
            secs = [r["s_per_iter_median"] for r in mine if "s_per_iter_median" in r]
            if not secs:
                entry[f"{b}:{prec}"] = {"error": mine[-1].get("error") if mine else "not run"}
                continue
            med = statistics.median(secs)
            entry[f"{b}:{prec}"] = {
                "s_per_iter": round(med, 3),
                "ratio_to_reference": round(med / ref_med, 3) if ref_med else None,
                "images_per_s": round(2 * args.batch / med, 3),
                "peak_rss_mib": round(max(r["peak_rss_mib"] for r in mine), 0),
                "quiet_iters": sum(r["quiet_iters"] for r in mine),
                "losses_finite": all(r["losses_finite"] for r in mine),
            }
        entry.update({k: {"skipped": why} for k, why in skipped.items()})
        results[size] = entry
    print(
        json.dumps(
            {
                "benchmark": "speed_vs_reference",
                "cpu": cpu,
                "batch_per_domain": args.batch,
                "iters_per_child": args.iters,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "install": args.install,
                "results": results,
                "total_s": round(time.perf_counter() - t_all, 1),
                "runs": runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
