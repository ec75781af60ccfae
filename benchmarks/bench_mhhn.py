"""MHHN benchmarks: the SDT decoder (batched torch vs a per-landmark numpy loop) and the MCG block (eqs. 7-9):
time and peak memory of one block, forward + backward, SDPA vs explicit N×N.

SDT (``bench_sdt``): noisy Gaussians (amplitude 0.8-1.5, sigma 3, noise 0.01) on 64x64 maps, 68 landmarks per
image; the batched ``landmarks.heatmaps.decode_sdt`` against the paper's recipe written one landmark at a time
in numpy (argmax, 9x9 window, QR, eq. 20). Reported: ms per batch, the speed ratio, and the largest coordinate
difference between the two (heatmap pixels) over the landmarks neither sends to the fallback.

MCG (``bench_mcg``):

For a (B, 256, H, W) pair P, O with H = W = 64 or 32 (N = 4096 or 1024 positions), fp32 or bf16 tensors, one
step is ``block(P, O)`` then a backward pass to P, O and γ (γ = 0.5 so the whole path is live). Two forwards:

* ``sdpa``: ``MultiOrderCorrelation`` (one ``scaled_dot_product_attention`` call with query cat(P, O), key
  cat(P + O, O) and value O), which fused backends run without materialising the N×N correlation;
* ``explicit``: the formula as written, Z = P Pᵀ + O Oᵀ + P Oᵀ, softmax, Ẑ O, with Z held in memory.

Reported per image: the median step time and the peak memory the step adds on top of its inputs. Each
configuration runs in a fresh subprocess; on CUDA the peak is ``max_memory_allocated`` after
``reset_peak_memory_stats``; on CPU it is read from the profiler's memory view of one extra step (every tensor
torch creates and frees, in time order; the peak of their running sum), because the process's resident size
(``ru_maxrss``) only moves when a step outgrows what the process ever held, and read 0 for most rows.
``N×N fp32 MB/img`` is the size of one N×N fp32 matrix, for comparison (67 MB at 64x64). MB = 10⁶ bytes.

Standalone: ``python benchmarks/bench_mhhn.py [--quick]`` prints the table.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # importable by path, and the worker subprocess runs this file as a script
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from landmarks.heatmaps import decode_argmax, decode_sdt, encode_gaussian  # noqa: E402
from lightning_modules.components.mcg import MultiOrderCorrelation  # noqa: E402

CHANNELS = 256


def mcg_explicit(p: torch.Tensor, o: torch.Tensor, gamma: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """Eqs. 7-9 as written, materialising the N×N matrix Z (the baseline the SDPA form avoids)."""
    b, c, h, w = o.shape
    p_, o_ = (t.flatten(2).transpose(1, 2) for t in (p, o))  # (B, N, C)
    z = p_ @ p_.transpose(1, 2) + o_ @ o_.transpose(1, 2) + p_ @ o_.transpose(1, 2)  # (B, N, N)
    if scaled:
        z = z / math.sqrt(c)
    attended = torch.softmax(z, dim=-1) @ o_  # (B, N, C)
    return o + gamma * attended.transpose(1, 2).reshape(b, c, h, w)


def measure(size: int, dtype: str, implementation: str, batch: int, repeats: int) -> dict:
    """One configuration, meant to run alone in its process: median ms and peak extra MB, per image."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    block = MultiOrderCorrelation(CHANNELS).to(device)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    forward = block if implementation == "sdpa" else (lambda p, o: mcg_explicit(p, o, block.gamma))
    g = torch.Generator(device).manual_seed(0)

    def tensors(n: int, s: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.randn(n, CHANNELS, s, s, generator=g, device=device).mul_(0.1).to(getattr(torch, dtype))
                     .requires_grad_(i < 2) for i in range(3))

    def step(p: torch.Tensor, o: torch.Tensor, grad: torch.Tensor) -> None:
        block.gamma.grad = None
        forward(p, o).backward(grad)

    step(*tensors(1, 8))  # tiny warm-up: loads kernels and thread pools outside the measured peak
    p, o, grad = tensors(batch, size)
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for i in range(repeats + 1):  # the first, full-size, step is a warm-up: not timed, but in the peak
        p.grad = o.grad = None
        sync()
        start = time.perf_counter()
        step(p, o, grad)
        sync()
        if i:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        p.grad = o.grad = None
        peak = profiled_peak(lambda: step(p, o, grad))
    return {"map": f"{size}x{size}", "dtype": dtype, "implementation": implementation, "batch": batch,
            "device": device.type, "ms/img": 1e3 * sorted(times)[len(times) // 2] / batch,
            "peak MB/img": peak / 1e6 / batch, "N×N fp32 MB/img": (size * size) ** 2 * 4 / 1e6}


def profiled_peak(fn: Callable[[], None]) -> float:
    """Bytes: the peak, over one call of ``fn``, of the tensors created minus those freed since it started, from
    the profiler's memory view (``_memory_profile``: the timeline behind ``export_memory_timeline``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        current += {"CREATE": size, "DESTROY": -size}.get(action.name, 0)
        peak = max(peak, current)
    return float(peak)


def sdt_numpy_loop(maps: np.ndarray, window: int = 9, sigma: float = 3.0) -> np.ndarray:
    """(B, K, h, w) → (B, K, 2): eq. 20 one landmark at a time, window frame, numpy QR (NaN: no estimate)."""
    out = np.full(maps.shape[:2] + (2,), np.nan)
    half = window // 2
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            m = maps[b, k]
            row, col = np.unravel_index(np.argmax(m), m.shape)
            ys, xs = np.mgrid[max(row - half, 0):row + half + 1, max(col - half, 0):col + half + 1]
            keep = (ys < m.shape[0]) & (xs < m.shape[1])
            ys, xs = ys[keep], xs[keep]
            f = np.maximum(m[ys, xs], 1e-6)
            dx, dy = xs - col, ys - row
            q, r = np.linalg.qr(f[:, None] * np.stack([np.ones_like(f), dx, dy, dx**2, dy**2], 1))
            c = np.linalg.solve(r, q.T @ (f * np.log(f)))
            s = sigma**2 if c[0] >= 0 else -2 * c[0] / (c[1] ** 2 + c[2] ** 2)
            out[b, k] = col + s * c[1], row + s * c[2]
    return out


def bench_sdt(quick: bool) -> pd.DataFrame:
    """Batched torch SDT (fp32, fp64) vs the numpy loop on one batch of 68-landmark maps."""
    batch = 4 if quick else 16
    g = torch.Generator().manual_seed(0)
    points = torch.rand(batch, 68, 2, generator=g) * 56 + 4
    amplitude = 0.8 + 0.7 * torch.rand(batch, 68, 1, 1, generator=g)  # G < 1: eq. 20 has no estimate, fallback
    maps = amplitude * encode_gaussian(points, (64, 64), 3.0) + 0.01 * torch.randn(batch, 68, 64, 64, generator=g)
    rows = []
    start = time.perf_counter()
    reference = sdt_numpy_loop(maps.double().numpy())
    loop_ms = (time.perf_counter() - start) * 1e3
    for dtype in (torch.float32, torch.float64):
        decode_sdt(maps.to(dtype), reading="eq20")  # warm-up
        times = []
        for _ in range(3 if quick else 10):
            start = time.perf_counter()
            pred, info = decode_sdt(maps.to(dtype), reading="eq20", return_info=True)
            times.append((time.perf_counter() - start) * 1e3)
        fallback = info.fallback
        both = ~fallback.numpy() & np.isfinite(reference).all(-1)
        ms = float(np.median(times))
        rows.append({"implementation": f"torch batched, {str(dtype).split('.')[-1]}", "batch": batch,
                     "ms / batch": ms, "x faster than the loop": loop_ms / ms,
                     "max |diff| px": float(np.abs(pred.double().numpy() - reference)[both].max()),
                     "fallback": int(fallback.sum())})
    no_fit = int((~np.isfinite(reference).all(-1)).sum())
    rows.append({"implementation": "numpy loop, per landmark", "batch": batch, "ms / batch": loop_ms,
                 "x faster than the loop": 1.0, "max |diff| px": 0.0, "fallback": no_fit})
    return pd.DataFrame(rows)


READINGS = {"argmax + 1/4": None, "eq20, window frame": ("eq20", "window"),
            "eq20, heatmap frame": ("eq20", "heatmap"), "isotropic (default)": ("isotropic", "window"),
            "eq18": ("eq18", "window")}


def bench_sdt_readings(quick: bool) -> pd.DataFrame:
    """Mean decoding error (heatmap px) of each SDT reading and frame against argmax + 1/4, on Gaussians of
    height G and width sigma (sigma* = 3 in eq. 20), exact and with N(0, 0.01) noise, centres uniform in
    [10, 54] on 64x64 maps; the last row counts the (noise, sigma, G) cells where a reading is worse than
    argmax + 1/4. This is the measurement behind the codec's default ``sdt_reading``."""
    g = torch.Generator().manual_seed(0)
    centres = 10 + torch.rand(1, 100 if quick else 400, 2, generator=g, dtype=torch.float64) * 44
    y, x = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64),
                          indexing="ij")
    rows = []
    for noise in (0.0, 0.01):
        for sigma in (2.0, 3.0, 4.0):
            for height in (0.8, 0.9, 0.98, 0.99, 1.0, 1.01, 1.1, 1.3):
                d2 = (x - centres[..., 0, None, None]) ** 2 + (y - centres[..., 1, None, None]) ** 2
                maps = height * torch.exp(-d2 / (2 * sigma**2))
                maps = maps + noise * torch.randn(maps.shape, generator=g, dtype=maps.dtype)
                row = {"noise": noise, "sigma": sigma, "G": height}
                for name, reading in READINGS.items():
                    pred = decode_argmax(maps) if reading is None else decode_sdt(maps, 9, 3.0, *reading)
                    row[name] = float((pred.double() - centres).norm(dim=-1).mean())
                rows.append(row)
    frame = pd.DataFrame(rows)
    worse = {name: int((frame[name] > frame["argmax + 1/4"] + 1e-12).sum()) for name in READINGS}
    return pd.concat([frame, pd.DataFrame([{"noise": "cells worse than argmax + 1/4", **worse}])],
                     ignore_index=True)


def bench_mcg(quick: bool) -> pd.DataFrame:
    """Every (map size, dtype, implementation) configuration, each measured in a fresh subprocess."""
    batches = {64: 1, 32: 2} if quick else {64: 4, 32: 8}
    repeats = 2 if quick else 5
    rows = []
    for size, batch in batches.items():
        for dtype in ("float32", "bfloat16"):
            for implementation in ("sdpa", "explicit"):
                config = dict(size=size, dtype=dtype, implementation=implementation, batch=batch, repeats=repeats)
                out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)], capture_output=True,
                                     text=True, check=True, cwd=ROOT)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(measure(**json.loads(sys.argv[2]))))
    else:
        for bench in (bench_sdt, bench_sdt_readings, bench_mcg):
            print(bench(quick="--quick" in sys.argv[1:]).to_markdown(index=False, floatfmt=".4g"), end="\n\n")
