"""``make bench``: throughput and ratios of the walking skeleton, printed as tables (nothing is asserted).

1. Synthetic data pipeline: samples/s of the training dataset (render + crop + augment + tensorise) with
   0, 1 and 2 DataLoader workers, and per worker.
1b. File pipeline on a tiny 300W-format tree (800 px JPEGs + ``.pts``, as real photos): decode + crop +
   augment per epoch without the cache, and with the crop cache (epoch 1 fills it, epoch 2 reads it), with
   persistent workers.
2. Heatmap target encoding per batch vs one training step of the demo hourglass.
2b. Boundary-map rendering (``HeatmapCodec.boundary_maps``: WFLW's 15 boundaries, 300W's 13, with and without
   the union) per batch of 16 at 64x64 vs one training step of the demo hourglass at 256 px (64x64 maps, 98
   points), and the ratio (issue 15's goal: under 3 %).
3. Metric computation for 10,000 images x 98 points (NMEMetric update + compute, functional AUC).
4. One training step of the demo hourglass in fp32 vs bf16-mixed autocast, with and without channels_last.
5. MHHN (``bench_mhhn.py``): batched SDT decoding vs a per-landmark numpy loop (speed ratio, max difference);
   MCG block time and peak memory per image, SDPA vs the explicit N x N matrix, fp32 and bf16.
6. Loader-fed training (``bench_feed.py``): time per training step of the demo hourglass fed by the synthetic
   loader / time per step on the same batches pre-loaded, with and without the in-memory faces.
7. PWC (``bench_pwc.py``): one training step of the PWC detector at 224 px, fp32 vs bf16-mixed, with and without
   channels_last; the share of pixel_labels + the PWC / hybrid loss in it; pixel_labels alone.
8. GlomFace (``bench_glomface.py``): one training step of the 68-point cascade (T = 4, 224 px, 40 px patches,
   batch 16), the share of its patch extraction (issue 18's goal: under 5 %), and an iteration's forward split
   into patch CNN, PHM non-local blocks and WHM fully connected layers.
9. CI metric gate (``bench_ci_gate.py``): wall time of ``make ci-gate``'s command in a fresh process (goal: well
   under a minute on 2 cores), and of the same checkpoint on every synthetic test face.

Options: ``--quick`` runs fewer repetitions (for a smoke test).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from bench_ci_gate import bench_ci_gate, ci_gate_title  # noqa: E402  (benchmarks/ is on sys.path as a script)
from bench_feed import bench_loader_feed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from bench_glomface import bench_glomface, glomface_title  # noqa: E402
from bench_mhhn import bench_mcg, bench_sdt, bench_sdt_readings  # noqa: E402
from bench_pwc import bench_pwc, section_title  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datamodules.augment import AugmentConfig  # noqa: E402
from datamodules.base import collate_faces, seed_worker  # noqa: E402
from datamodules.synthetic import SyntheticFaceDataModule, SyntheticFaceSource  # noqa: E402
from datamodules.w300 import W300DataModule  # noqa: E402
from landmarks.heatmaps import HeatmapCodec, crop_to_heatmap, encode_gaussian  # noqa: E402
from landmarks.layouts import W300_68, WFLW_98  # noqa: E402
from landmarks.metrics import NMEMetric, auc, inter_ocular, per_image_nme  # noqa: E402
from lightning_modules.hourglass import StackedHourglassModule  # noqa: E402

DEMO_MODEL = dict(num_stacks=2, depth=3, channels=64, codec=HeatmapCodec(stride=4, sigma=1.5),  # as the demo config
                  foreground_weight=10.0)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_data(n: int, input_size: int, batch_size: int) -> pd.DataFrame:
    dm = SyntheticFaceDataModule(train_size=n + 8, val_size=8, test_size=8, image_size=int(input_size * 1.5),
                                 input_size=input_size, batch_size=batch_size, num_workers=0,
                                 augment=AugmentConfig(), in_memory=False)  # rendered every epoch, as measured
    dm.setup("fit")
    rows = []
    for workers in (0, 1, 2):
        loader = DataLoader(dm.datasets["train"], batch_size=batch_size, num_workers=workers,
                            collate_fn=collate_faces, worker_init_fn=seed_worker, shuffle=True,
                            persistent_workers=False)
        start = time.perf_counter()
        count = sum(len(batch["image"]) for batch in loader)
        elapsed = time.perf_counter() - start
        rows.append({"workers": workers, "samples": count, "samples/s": count / elapsed,
                     "samples/s per worker": count / elapsed / max(workers, 1)})
    return pd.DataFrame(rows)


def write_300w_tree(root: str, n: int, image_size: int = 800) -> None:
    """``n`` synthetic faces written as a 300W training tree: JPEG photos and 1-based ``.pts`` files."""
    source = SyntheticFaceSource("300w_68", "train", n, seed=5, image_size=image_size)
    for i in range(n):
        folder = os.path.join(root, ("afw", "helen/trainset", "lfpw/trainset")[i % 3])
        os.makedirs(folder, exist_ok=True)
        face = source.load(i)
        Image.fromarray(face.image).save(os.path.join(folder, f"face_{i:04d}.jpg"), quality=90)
        lines = ["version: 1", "n_points:  68", "{"] + [f"{x + 1:.6f} {y + 1:.6f}" for x, y in face.landmarks]
        with open(os.path.join(folder, f"face_{i:04d}.pts"), "w") as f:
            f.write("\n".join(lines) + "\n}")


def bench_files(n: int, input_size: int, batch_size: int) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_300w_tree(os.path.join(tmp, "300W"), n)
        for workers in (0, 1, 2):
            for cached in (False, True):
                dm = W300DataModule(os.path.join(tmp, "300W"), check_counts=False, input_size=input_size,
                                    batch_size=batch_size, num_workers=workers, val_size=1, augment=AugmentConfig(),
                                    margin=1.25, cache_dir=os.path.join(tmp, f"cache{workers}") if cached else None)
                dm.setup("fit")
                loader = dm.train_dataloader()  # persistent workers: started once, kept across epochs
                for epoch in (1, 2):
                    start = time.perf_counter()
                    count = sum(len(batch["image"]) for batch in loader)
                    rate = count / (time.perf_counter() - start)
                    mode = ("cache, epoch 1 (fills it)" if epoch == 1 else "cache, epoch 2") if cached else \
                        f"decode, epoch {epoch}"
                    rows.append({"workers": workers, "mode": mode, "samples": count, "samples/s": rate,
                                 "samples/s per worker": rate / max(workers, 1)})
                del loader
    frame = pd.DataFrame(rows)
    decode = frame[frame["mode"] == "decode, epoch 2"].set_index("workers")["samples/s"]
    frame["vs decode"] = [r["samples/s"] / decode[r["workers"]] for _, r in frame.iterrows()]
    return frame


def training_step_fn(model: torch.nn.Module, batch: dict, autocast: bool, channels_last: bool) -> Callable:
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = batch["image"].contiguous(memory_format=torch.channels_last) if channels_last else batch["image"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model.training_loss(model(images), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def fake_batch(batch_size: int, input_size: int, points: int) -> dict:
    return {"image": torch.randn(batch_size, 3, input_size, input_size),
            "landmarks": torch.rand(batch_size, points, 2) * (input_size - 1)}


def bench_encoding(batch_size: int, input_size: int, repeats: int) -> pd.DataFrame:
    torch.manual_seed(0)
    model = StackedHourglassModule(layout="300w_68", input_size=input_size, **DEMO_MODEL)
    batch = fake_batch(batch_size, input_size, 68)
    step = timed(training_step_fn(model, batch, False, False), repeats)
    rows = []
    for points, size in ((68, input_size // 4), (98, 64)):
        pts = crop_to_heatmap(torch.rand(batch_size, points, 2) * size * 4, 4.0)
        t = timed(lambda pts=pts, size=size: encode_gaussian(pts, (size, size), 1.5), repeats * 5)
        rows.append({"targets": f"{batch_size} x {points} maps of {size}x{size}", "encode ms": t * 1e3,
                     "train step ms": step * 1e3, "encode / step": t / step})
    return pd.DataFrame(rows)


def bench_boundaries(batch_size: int, repeats: int, quick: bool) -> pd.DataFrame:
    """Boundary targets are drawn inside the step on the model's device; this is their share of a CPU step.

    The step is the demo hourglass built for 98 points at 256 px, so its maps are the 64x64 the boundaries are
    drawn at (PropNet's and TAB's networks are far larger: their steps are longer, the share smaller). The
    rendering cost does not depend on where the points lie (every pixel is measured against every segment), so
    random points stand in for faces."""
    torch.manual_seed(0)
    model = StackedHourglassModule(layout="wflw_98", input_size=256, **DEMO_MODEL)
    step = timed(training_step_fn(model, fake_batch(batch_size, 256, 98), False, False), 1 if quick else 3)
    rows = []
    for layout, union in ((WFLW_98, False), (WFLW_98, True), (W300_68, True)):
        points = torch.rand(batch_size, layout.num_points, 2) * 255  # crop pixels
        t = timed(lambda p=points, b=layout.boundaries, u=union: model.codec.boundary_maps(p, b, (64, 64), union=u),
                  repeats * 4)
        maps = len(layout.boundaries) + union
        segments = sum(max(len(b.indices) - 1, 1) for b in layout.boundaries)
        rows.append({"targets": f"{batch_size} x {maps} maps of 64x64 ({layout.num_points} points, {segments} "
                                f"segments{', + union' if union else ''})",
                     "render ms": t * 1e3, "train step ms (256 px)": step * 1e3, "render / step %": 100 * t / step})
    return pd.DataFrame(rows)


def bench_metrics(n: int, repeats: int) -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(n, 98, 2, generator=g, dtype=torch.float64) * 256
    pred = target + torch.randn(n, 98, 2, generator=g, dtype=torch.float64) * 3
    norm = {"inter_ocular": inter_ocular(target, WFLW_98), "bbox": torch.full((n,), 200.0, dtype=torch.float64)}
    mask = torch.rand(n, 6, generator=g) > 0.7
    subsets = ["pose", "expression", "illumination", "makeup", "occlusion", "blur"]

    def full_pass() -> None:
        metric = NMEMetric(list(norm), subsets)
        for i in range(0, n, 100):  # batches of 100, as an evaluation loop would feed it
            s = slice(i, i + 100)
            metric.update(pred[s], target[s], {k: v[s] for k, v in norm.items()}, torch.arange(i, i + 100)[: n - i],
                          mask[s])
        metric.compute()

    nme = per_image_nme(pred, target, norm["inter_ocular"])
    rows = [
        {"operation": f"NMEMetric: {n} images x 98 points, 2 normalisers x 7 subsets, update + compute",
         "ms": timed(full_pass, repeats) * 1e3},
        {"operation": f"per_image_nme, {n} x 98", "ms": timed(lambda: per_image_nme(pred, target, norm["bbox"]),
                                                              repeats) * 1e3},
        {"operation": f"auc@0.1 (1001-point grid), {n} images", "ms": timed(lambda: auc(nme, 0.1), repeats) * 1e3},
    ]
    return pd.DataFrame(rows)


def bench_precision(batch_size: int, input_size: int, repeats: int) -> pd.DataFrame:
    rows = []
    batch = fake_batch(batch_size, input_size, 68)
    for autocast in (False, True):
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = StackedHourglassModule(layout="300w_68", input_size=input_size, **DEMO_MODEL)
            t = timed(training_step_fn(model, batch, autocast, channels_last), repeats)
            rows.append({"precision": "bf16-mixed" if autocast else "fp32",
                         "channels_last": channels_last, "step ms": t * 1e3})
    frame = pd.DataFrame(rows)
    frame["speed-up vs fp32"] = frame["step ms"].iloc[0] / frame["step ms"]
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args(argv)
    repeats = 2 if opts.quick else 5
    batch_size, input_size = 16, 96
    print(f"# Benchmarks: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), batch {batch_size}, {input_size} px crops")
    sections = [
        ("Synthetic data pipeline (render + crop + augment + tensorise)",
         lambda: bench_data(64 if opts.quick else 256, input_size, batch_size)),
        ("File pipeline: 300W-format tree of 800 px JPEGs, 96 px crops, augmentation, margin 1.25",
         lambda: bench_files(48 if opts.quick else 160, input_size, batch_size)),
        ("Heatmap target encoding vs one training step (demo hourglass)",
         lambda: bench_encoding(batch_size, input_size, repeats)),
        ("Boundary maps vs one training step (demo hourglass at 256 px: 64x64 maps, 98 points; goal < 3 %)",
         lambda: bench_boundaries(batch_size, repeats, opts.quick)),
        ("Metric computation", lambda: bench_metrics(10_000, repeats)),
        ("Training step: fp32 vs bf16-mixed, channels_last (demo hourglass, CPU)",
         lambda: bench_precision(batch_size, input_size, repeats)),
        ("MHHN SDT decoding: batched torch vs per-landmark numpy loop (64x64 maps, 68 landmarks)",
         lambda: bench_sdt(opts.quick)),
        ("MHHN SDT readings: mean error (heatmap px) by peak height G and width sigma, vs argmax + 1/4",
         lambda: bench_sdt_readings(opts.quick)),
        ("MHHN MCG block: forward + backward per image, SDPA vs explicit N x N (256 channels)",
         lambda: bench_mcg(opts.quick)),
        ("Loader-fed training step / step on pre-loaded batches (demo hourglass and data, 1 worker; goal <= 1.10)",
         lambda: bench_loader_feed(opts.quick)),
        (section_title(opts.quick), lambda: bench_pwc(opts.quick)),
        (glomface_title(opts.quick), lambda: bench_glomface(opts.quick)),
        (ci_gate_title(), lambda: bench_ci_gate(opts.quick)),
    ]
    for title, run in sections:
        print(f"\n## {title}\n")
        print(run().to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
