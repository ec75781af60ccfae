"""Shared test fixtures. Tests never read ../shared: real files they need are copied under tests/data."""

import os
from pathlib import Path

import numpy as np
import pytest
from dataset_files import Face, write_wflw

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def aflw2000_shapes() -> tuple[np.ndarray, np.ndarray]:
    """Real 68-point shapes (2000, 68, 2) in image pixels and their yaw (2000,) in degrees."""
    pts = np.load(DATA / "aflw2000_3d" / "AFLW2000-3D-Reannotated.pts68.npy").transpose(0, 2, 1)
    yaw = np.load(DATA / "aflw2000_3d" / "AFLW2000-3D.pose.npy")
    return pts.astype(np.float64), yaw.astype(np.float64)


@pytest.fixture
def wflw_tree(tmp_path: Path) -> tuple[Path, dict[str, list[Face]]]:
    """A tiny WFLW copy in the release's on-disk format (``dataset_files.write_wflw``) and the faces written."""
    root = tmp_path / "WFLW"
    return root, write_wflw(root)
