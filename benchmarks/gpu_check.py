"""One-shot GPU check: the shared PyTorch reference and keras-fada's FADA step on TensorFlow, JAX and
torch, float32 and mixed_bfloat16, 4+4 images at 512x1024 (DeepLabV2-R101, K=19); prints one JSON line.

    python benchmarks/gpu_check.py                 # on a GPU machine, about 8 minutes
    python benchmarks/gpu_check.py --smoke         # tiny sizes on the CPU: the script cannot rot (CI)

Each configuration runs in its own process (``benchmarks/fada_step.py``; the reference
``torch_fada_step.py --device cuda``) and reports seconds per iteration, images/s, peak GPU memory,
MFU and whether its losses stayed finite. The FLOPs of one official iteration are counted once, on
the reference model with ``torch.utils.flop_counter`` at a small size, and scaled by the pixel count
(convolutions dominate and scale linearly). TF32 is off unless ``--tf32`` (float32 means float32,
as in the reference). The checkpoint-import parity tests then run with the GPU visible.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from speed_vs_reference import DEFAULT_REFERENCE, run_child  # noqa: E402

# Dense peak TFLOP/s (bfloat16 tensor cores, float32 without TF32) per GPU name fragment.
PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5), "L40S": (362.0, 91.6)}
PRECISIONS = {"float32": "float32", "mixed_bfloat16": "bf16"}  # keras-fada -> reference


def iteration_flops(reference: str, batch: int, height: int, width: int) -> float:
    """FLOPs of one official FADA iteration (batch + batch images), counted on the reference model
    at up to 128x256, 1+1 images, and scaled by the pixel count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = importlib.util.spec_from_file_location("torch_fada_step", reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    h, w = min(height, 128), min(width, 256)
    args = types.SimpleNamespace(
        lr=2.5e-4, lr_d=1e-4, weight_decay=5e-4, max_iter=62500, device="cpu", precision="float32"
    )
    step = ref.FADAStep(ref.FeatureExtractor(), ref.ASPPClassifierV2(), ref.PixelDiscriminator(), args)
    src, tgt = torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)
    labels = torch.randint(0, ref.NUM_CLASSES, (1, h, w))
    counter = FlopCounterMode(display=False)
    with counter:
        step(0, src, labels, tgt)
    return counter.get_total_flops() * batch * height * width / (h * w)


def peak_flops(device: str, precision: str) -> float | None:
    for name, (bf16, fp32) in PEAK_TFLOPS.items():
        if name in device:
            return (bf16 if precision != "float32" else fp32) * 1e12
    return None


def summarise(row: dict, flops: float | None, precision: str) -> dict:
    """The fields this check reports, from one child's JSON line."""
    if "error" in row:
        return row
    seconds = row.get("s_per_iter_median", row.get("sec_per_iter_median"))
    device = str(row.get("device") or row.get("gpu") or "cpu")
    peak = peak_flops(device, precision)
    return {
        "device": device,
        "s_per_iter": round(seconds, 4),
        "images_per_s": round(2 * row["batch_per_domain"] / seconds, 2),
        "peak_gpu_mem_mib": row.get("peak_gpu_mem_mib"),
        "mfu": round(flops / seconds / peak, 3) if flops and peak else None,
        "losses_finite": row.get("losses_finite"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU (small network for keras-fada)"
    )
    p.add_argument("--reference", default=DEFAULT_REFERENCE)
    p.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 in float32 (off: float32 means float32)")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--budget", type=float, default=480.0, help="seconds; later configurations are skipped")
    args = p.parse_args()
    batch, height, width, net, device = (
        (1, 32, 64, "small", "cpu") if args.smoke else (4, 512, 1024, "resnet101", "cuda")
    )
    iters, warmup = (2, 1) if args.smoke else (args.iters, 2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NVIDIA_TF32_OVERRIDE="1" if args.tf32 else "0")
    start = time.perf_counter()
    out = {"benchmark": "gpu_check", "smoke": args.smoke, "size": [height, width], "batch_per_domain": batch}
    have_reference = os.path.isfile(args.reference)
    flops = iteration_flops(args.reference, batch, height, width) if have_reference else None
    out["gflop_per_iter"] = round(flops / 1e9, 1) if flops else None

    def timeout():
        return max(30.0, args.budget - (time.perf_counter() - start))

    rows = {}
    for precision, ref_precision in PRECISIONS.items():
        if args.smoke and precision != "float32":
            continue  # the reference's bf16 autocast is emulated on most CPUs: minutes at any size
        if not have_reference:
            rows[f"reference/{precision}"] = {"error": f"no reference at {args.reference}"}
            continue
        cmd = [sys.executable, args.reference, "--device", device, "--precision", ref_precision]
        cmd += ["--batch", str(batch), "--height", str(height), "--width", str(width)]
        cmd += ["--iters", str(iters), "--warmup", str(warmup)] + (["--tf32"] if args.tf32 else [])
        rows[f"reference/{precision}"] = summarise(run_child(cmd, env, timeout()), flops, precision)
    for backend in args.backends:
        for precision in PRECISIONS:
            if time.perf_counter() - start > args.budget:
                rows[f"{backend}/{precision}"] = {"error": "skipped: over --budget"}
                continue
            cmd = [sys.executable, os.path.join(HERE, "fada_step.py"), "--net", net, "--precision", precision]
            cmd += ["--batch", str(batch), "--height", str(height), "--width", str(width)]
            cmd += ["--iters", str(iters), "--warmup", str(warmup)] + (["--tf32"] if args.tf32 else [])
            child = run_child(cmd, dict(env, KERAS_BACKEND=backend), timeout())
            rows[f"{backend}/{precision}"] = summarise(child, flops, precision)
    out["rows"] = rows
    out["targets"] = targets(rows)
    if not args.smoke:
        out["parity_tests"] = parity_tests(args.backends, env, timeout)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    failed = [
        k
        for k, v in rows.items()
        if "error" in v and not k.startswith("reference") or v.get("losses_finite") is False
    ]
    return 1 if failed else 0


def targets(rows: dict) -> dict:
    """Issue 23's targets per backend: bf16 >= 2x the reference's float32 images/s and >= 1.2x its bf16
    autocast, bf16 MFU >= 35%, float32 >= the reference."""

    def speed(key):
        return rows.get(key, {}).get("images_per_s")

    ref32, ref16 = speed("reference/float32"), speed("reference/mixed_bfloat16")
    out = {}
    for key in rows:
        backend, precision = key.split("/")
        if backend == "reference" or speed(key) is None:
            continue
        if precision == "float32":
            out[key] = {"vs_reference_f32": round(speed(key) / ref32, 2) if ref32 else None, "target": 1.0}
        else:
            out[key] = {
                "vs_reference_f32": round(speed(key) / ref32, 2) if ref32 else None,
                "vs_reference_bf16": round(speed(key) / ref16, 2) if ref16 else None,
                "mfu": rows[key].get("mfu"),
                "targets": {"vs_reference_f32": 2.0, "vs_reference_bf16": 1.2, "mfu": 0.35},
            }
    return out


def parity_tests(backends, env, timeout) -> dict:
    """The checkpoint-import parity tests per backend, with the GPU visible (TF32 as set in ``env``)."""
    out = {}
    for backend in backends:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/models/test_checkpoint_import.py",
        ]
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=dict(env, KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            timeout=timeout(),
        )
        out[backend] = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return out


if __name__ == "__main__":
    sys.exit(main())
