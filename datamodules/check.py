"""Dataset checker: is a downloaded copy complete and readable? Run it before a long training.

    python -m datamodules.check 300w --root /data/300W       # one dataset
    python -m datamodules.check all --data-root /data        # every DATA_ROOT sub-folder that exists

For each split it prints the faces found against the published count, the subset counts against theirs, and
every missing, unreadable or malformed file (annotation problems at parse time, then every image decoded in
worker processes, with a progress bar). Exits 1 on any problem or count mismatch, 0 when all is as published.
A root one level off (the dataset's own sub-folder, e.g. ``--root /data/AFLW2000-3D/AFLW2000``, or the data
root) gets a one-line HINT with the folder to give instead; so does a ``--data-root`` that is a dataset's folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datamodules.base import FaceSource
from datamodules.files import DatasetError, corrected_root
from datamodules.registry import CHECKED


@dataclass
class SplitReport:
    """What the checker found for one split."""

    split: str
    found: int
    expected: int | None
    subsets: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # tag -> (found, expected)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        counts_ok = self.expected is None or self.found == self.expected
        subsets_ok = all(e is None or f == e for f, e in self.subsets.values())
        return counts_ok and subsets_ok and not self.errors


class _DecodeCheck(Dataset):
    """Decodes face i of a source in a worker; returns the error message, or "" when the face is usable."""

    def __init__(self, source: FaceSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> str:
        try:
            raw = self.source.load(index)
            if raw.landmarks.shape != (self.source.layout.num_points, 2) or not np.isfinite(raw.landmarks).all():
                return f"{raw.image_id}: landmarks of shape {raw.landmarks.shape} or non-finite"
            if raw.image.ndim != 3 or raw.image.shape[2] != 3 or raw.image.dtype != np.uint8:
                return f"{raw.image_id}: decoded image is {raw.image.dtype} {raw.image.shape}, not (H, W, 3) uint8"
        except DatasetError as error:
            return str(error)
        return ""


def check_source(split: str, source: FaceSource, decode: bool = True, workers: int = 2) -> SplitReport:
    """Counts of ``source`` against its published ones, parse problems, and (``decode``) unreadable images."""
    problems = source.problems.errors if source.problems is not None else []
    found = len(source) + len(problems)  # skipped faces exist on disk, they are listed as errors
    subsets = {tag: 0 for tag in source.expected_subsets}
    for i in range(len(source)):
        for tag in _subsets_of(source, i):
            subsets[tag] = subsets.get(tag, 0) + 1
    report = SplitReport(split, found, source.expected_size,
                         {t: (n, source.expected_subsets.get(t)) for t, n in subsets.items()},
                         [str(e) for e in problems])
    if decode and len(source):
        loader = DataLoader(_DecodeCheck(source), batch_size=16, num_workers=workers, collate_fn=list)
        for batch in tqdm(loader, desc=f"  decoding {source.name}", unit="batch", leave=False,
                          disable=not sys.stderr.isatty()):
            report.errors += [message for message in batch if message]
    return report


def _subsets_of(source: FaceSource, index: int) -> tuple[str, ...]:
    records = getattr(source, "records", None)  # record sources know tags without decoding
    return tuple(records[index].subsets) if records is not None else tuple(source.load(index).subsets)


def sources_for(dataset: str, root: str | Path) -> dict[str, Callable[[], FaceSource]]:
    """Builders of the check sources of ``dataset`` under ``root``, parsed in skip mode so every problem is
    listed; built one at a time so that a missing split does not hide the others."""
    return CHECKED[dataset].check_sources(root, on_error="skip", check_counts=False)


def check_dataset(dataset: str, root: str | Path, decode: bool = True, workers: int = 2,
                  out=sys.stdout) -> bool:
    """Check one dataset copy, print its report, return True when it is complete and readable."""
    print(f"== {dataset} at {root}", file=out)
    ok, rows, errors, hints = True, [], [], {}
    for split, build in sources_for(dataset, root).items():
        try:
            source = build()
        except DatasetError as error:
            rows.append([split, "all", "MISSING", "", ""])
            errors.append(str(error))
            hints.setdefault(corrected_root(error.path, root), split)
            ok = False
            continue
        report = check_source(split, source, decode, workers)
        ok &= report.ok
        rows.append([split, "all", report.found, _fmt(report.expected), _status(report.found, report.expected)])
        rows += [[split, tag, n, _fmt(e), _status(n, e)] for tag, (n, e) in report.subsets.items()]
        rows += [[split, label, n, "-", ""] for label, n in source.extra_counts.items()]
        errors += report.errors
    print(tabulate(rows, headers=["split", "subset", "found", "expected", ""], tablefmt="simple"), file=out)
    for message in errors[:50]:
        print(f"  ERROR {message}", file=out)
    if len(errors) > 50:
        print(f"  ... {len(errors) - 50} more errors", file=out)
    for better in filter(None, hints):
        print(f"  HINT: {root} is not the folder the loader reads; run python -m datamodules.check {dataset} "
              f"--root {better}", file=out)
    print(f"  {'OK' if ok else 'PROBLEMS FOUND'}: {dataset}", file=out)
    return ok


def _fmt(expected: int | None) -> str:
    return "-" if expected is None else str(expected)


def _status(found: int, expected: int | None) -> str:
    return "" if expected is None or found == expected else "MISMATCH"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.check", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=[*CHECKED, "all"])
    parser.add_argument("--root", help="the dataset's folder (one dataset)")
    parser.add_argument("--data-root", help="folder with one sub-folder per dataset (with 'all')")
    parser.add_argument("--no-decode", action="store_true", help="check files and annotations, skip decoding")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    decode = not args.no_decode
    if args.dataset != "all":
        if not args.root:
            parser.error("--root is required for one dataset")
        return 0 if check_dataset(args.dataset, args.root, decode, args.workers) else 1
    if not args.data_root or not Path(args.data_root).is_dir():
        parser.error(f"--data-root must be an existing folder, got {args.data_root!r}")
    present = {name: d.root(args.data_root) for name, d in CHECKED.items() if d.root(args.data_root).is_dir()}
    for name, d in CHECKED.items():
        if name not in present:
            print(f"-- {name}: no {d.root(args.data_root)}, skipped")
    if not present:
        print(f"no dataset folder found under {args.data_root} (expected {[d.folder for d in CHECKED.values()]})")
        if any(d.folder == Path(args.data_root).name for d in CHECKED.values()):
            print(f"HINT: {args.data_root} is a dataset's own folder; give the folder that holds it: --data-root "
                  f"{Path(args.data_root).parent}")
        return 1
    results = {name: check_dataset(name, root, decode, args.workers) for name, root in present.items()}
    failed = [name for name, ok in results.items() if not ok]
    print(f"checked {len(results)} dataset(s): " + ("all complete" if not failed else f"problems in {failed}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
