"""Reading dataset files with errors that name the file: images, problem collection, folder scans.

Every parser reports a bad input through :class:`Problems`, which either raises a :class:`DatasetError`
naming the file (and line) at once (``on_error="raise"``, the default) or, when the user asked to skip bad
samples (``on_error="skip"``), counts it, warns once with a summary, and lets the parser drop the face. Either
way a split never comes out silently shorter.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageOps

ON_ERROR = ("raise", "skip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff")


class DatasetError(ValueError):
    """A problem with one of a dataset's files; the message starts with the file (and line)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple:
        """Pickle by the constructor's arguments, so the error crosses from a DataLoader worker intact."""
        return type(self), (self.path, self.reason, self.line)


@dataclass
class Problems:
    """Collects bad inputs of one source: raise at the first (``"raise"``) or count and summarise (``"skip"``)."""

    source: str
    on_error: str = "raise"
    errors: list[DatasetError] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")

    def report(self, path: str | Path, message: str, line: int | None = None) -> None:
        """Record one bad input; raises at once unless skipping."""
        error = DatasetError(path, message, line)
        if self.on_error == "raise":
            raise error
        self.errors.append(error)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.source}: skipped {len(self.errors)} bad sample(s):"]
        lines += [f"  {e}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"  ... and {len(self.errors) - limit} more")
        return "\n".join(lines)

    def warn(self) -> None:
        """Warn once with the count and the list of skipped samples (nothing when there were none)."""
        if self.errors:
            warnings.warn(self.summary(), stacklevel=3)


def read_image(path: str | Path, exif_orientation: bool = False) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB.

    Greyscale images are replicated to three channels, 16-bit images are scaled to 8 bits (value / 257),
    palette and alpha images are converted to RGB. EXIF orientation is ignored by default, on purpose: dataset
    annotations refer to the stored pixel grid. ``exif_orientation=True`` turns the image upright as a viewer
    shows it (a camera's rotated photo; ``python -m experiments.photos``). A missing, unreadable or truncated
    file raises :class:`DatasetError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: a truncated file fails here, not later
            if exif_orientation:
                im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(im, dtype=np.float64)
                high = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
                array = np.clip(np.rint(array * (255.0 / high)), 0, 255).astype(np.uint8)
                return np.repeat(array[:, :, None], 3, axis=2)
            if mode == "L":
                return np.repeat(np.asarray(im)[:, :, None], 3, axis=2)
            if mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(path, f"unreadable or truncated image ({error})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image from its header, without decoding it."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(path, f"unreadable image header ({error})") from None


def find_image(stem: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> Path | None:
    """The image beside an annotation: ``stem`` with the first existing suffix (any case), else None."""
    for suffix in suffixes:
        for candidate in (stem.with_name(stem.name + suffix), stem.with_name(stem.name + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def dataset_root(root: str | Path, what: str) -> Path:
    """``root`` as a folder that exists: a wrong dataset root is one error saying that the root does not exist,
    not a complaint about the first sub-folder a parser looks for inside it."""
    root = Path(root)
    if not root.is_dir():
        kind = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(root, f"{what} folder is missing: this dataset root {kind}; give the folder that holds "
                                 "the dataset")
    return root


def require_folder(path: str | Path, what: str, pattern: str = "*") -> Path:
    """``path`` as a folder that exists and holds at least one ``pattern`` file; clear error otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(path, f"{what} folder is missing" + root_hint(path, pattern=pattern))
    if next(path.glob(pattern), None) is None:
        raise DatasetError(path, f"{what} folder has no {pattern} files")
    return path


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} file is missing" + root_hint(path))
    return path


def corrected_root(expected: str | Path, root: str | Path | None = None, pattern: str | None = None) -> Path | None:
    """The dataset root the user probably meant when ``expected``, a path a loader reads under ``root``, is
    missing: a root one level off is the commonest cause, and the error should name the folder to give instead.

    One level too deep (the dataset's own sub-folder given, e.g. ``.../AFLW2000`` to a loader that reads
    ``<root>/AFLW2000/*.jpg``): the parent holds ``expected``'s path below ``root``; a root whose name is that
    sub-folder's is this case. One level too high (the data root given): exactly one sub-folder holds it.
    "Holds" means exists and, with a ``pattern`` (a folder's files), has a match, so that a correct root missing
    an optional part (300W's private set) suggests nothing. None when neither fits, or when ``root`` has the
    path's first step (a partial copy, not a wrong root). Without ``root``, the deepest existing folder above
    ``expected`` stands for it (loaders check that their root exists first, :func:`dataset_root`).
    """
    expected = Path(expected)
    root = Path(root) if root is not None else next((p for p in expected.parents if p.is_dir()), None)
    if root is None or not expected.is_relative_to(root) or expected == root:
        return None
    below = expected.relative_to(root)
    if (root / below.parts[0]).exists():
        return None
    if root.parent != root and _holds(root.parent / below, pattern):
        return root.parent
    try:
        holders = [child for child in sorted(root.iterdir()) if child.is_dir() and _holds(child / below, pattern)]
    except OSError:
        return None
    return holders[0] if len(holders) == 1 else None


def root_hint(expected: str | Path, root: str | Path | None = None, pattern: str | None = None) -> str:
    """A clause for a "missing" message that names the root to give instead (:func:`corrected_root`), or ""."""
    better = corrected_root(expected, root, pattern)
    return "" if better is None else f" (hint: give {better} as the dataset root)"


def _holds(path: Path, pattern: str | None) -> bool:
    """``path`` exists; with ``pattern``, it is a folder with at least one matching file."""
    if pattern is None:
        return path.exists()
    return path.is_dir() and next(path.glob(pattern), None) is not None


def load_mat(path: str | Path, names: tuple[str, ...], what: str = "MATLAB", **options) -> dict:
    """The variables ``names`` of a MATLAB v5 ``.mat`` (``options`` go to ``scipy.io.loadmat``).

    A missing or unreadable file, or a missing variable, raises :class:`DatasetError` naming the file (and the
    variable, with the ones the file does have).
    """
    path = require_file(path, what)
    try:
        mat = scipy.io.loadmat(str(path), **options)
    except Exception as error:  # scipy raises many types on a truncated or foreign file
        raise DatasetError(path, f"unreadable .mat file ({type(error).__name__}: {error})") from None
    for name in names:
        if name not in mat:
            present = sorted(k for k in mat if not k.startswith("__"))
            raise DatasetError(path, f"missing variable {name!r} (the file has {present})")
    return mat


def check_count(problems: Problems, path: str | Path, found: int, expected: int | None, enforce: bool) -> None:
    """Enforce a split's published size (a partial copy must be asked for with ``check_counts=False``)."""
    if enforce and expected is not None and found != expected:
        raise DatasetError(path, f"{problems.source}: found {found} faces, the published split has {expected} "
                                 "(incomplete copy? pass check_counts=False to use a partial one)")
