"""COFW-68's training sets: 300W (the benchmark's protocol, the default) or 300W-LP (TAB, Table 5), on tiny copies
written in the releases' on-disk formats. The "given" box of a training face is checked against a numpy min / max
of the points as written; crops against the similarity they must be (box centre to crop centre, 1.25x box side)."""

import re

import numpy as np
import pytest
import scipy.io
from dataset_files import COFW68_REAL, cofw68_folder, make_w300lp
from jsonargparse import ArgumentParser

import datamodules.aflw2000
from datamodules.cofw import COFW68DataModule
from datamodules.files import DatasetError
from landmarks.geometry import matrix_scale
from landmarks.layouts import W300_68
from leaderboard import runner
from leaderboard.manifest import Experiment
from lightning_modules.training import data_identity, identity_differences

SIZE = 64
OPTIONS = dict(check_counts=False, input_size=SIZE, batch_size=2, num_workers=0, val_size=1)


@pytest.fixture
def folders(tmp_path, aflw2000_shapes):
    """(COFW folder with COFW-68, 300W training copy, 300W-LP copy with its _Flip twins)."""
    shapes, _ = aflw2000_shapes
    cofw = cofw68_folder(tmp_path / "COFW", tmp_path / "300W")
    return cofw, tmp_path / "300W", make_w300lp(tmp_path / "300W_LP", shapes)


def written_box(points: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] of written points, by numpy."""
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


def affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def check_crop(sample: dict, points: np.ndarray) -> None:
    """The sample is the un-augmented crop of the points' box: centre to crop centre, side 1.25x the box side."""
    transform = sample["meta"]["transform"].numpy()
    x1, y1, x2, y2 = written_box(points)
    assert matrix_scale(transform) == pytest.approx(SIZE / (1.25 * max(x2 - x1, y2 - y1)))
    np.testing.assert_allclose(affine(transform, np.array([[(x1 + x2) / 2, (y1 + y2) / 2]])), [[31.5, 31.5]],
                               atol=1e-9)
    np.testing.assert_allclose(sample["landmarks"].numpy(), affine(transform, points), atol=1e-3)


def test_cofw68_trains_on_300w_lp_with_the_landmark_box_as_given(folders, aflw2000_shapes, monkeypatch):
    cofw, _, lp = folders
    shapes, _ = aflw2000_shapes
    reads = []
    read = datamodules.aflw2000.read_w300lp_mat
    monkeypatch.setattr(datamodules.aflw2000, "read_w300lp_mat", lambda path: reads.append(path) or read(path))
    dm = COFW68DataModule(root=str(cofw), train_root=str(lp), train_set="300w_lp", **OPTIONS)
    train = dm.source("train")
    assert reads == []  # listed, not parsed: the .mat files are read when a face loads
    assert train.name == "300w-lp-train" and len(train) == 5
    assert dict(train.protocol) == {"include_flipped": False, "one_based": False, "given_box": "landmarks"}
    for i in range(len(train)):
        points = scipy.io.loadmat(lp / train.image_id(i).replace(".jpg", ".mat"))["pt2d"].T  # as written
        np.testing.assert_array_equal(points, shapes[i])  # sorted folders and stems: the writer's order
        np.testing.assert_array_equal(train.load(i).boxes["given"], written_box(points))
        np.testing.assert_array_equal(train.annotation(i).boxes["given"], written_box(points))
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (4, 1)
    samples = [dm.datasets[split][k] for split in ("train", "val") for k in range(len(dm.datasets[split]))]
    for sample in samples:
        check_crop(sample, shapes[sample["meta"]["index"]])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["landmarks"].shape == (2, W300_68.num_points, 2)
    assert batch["visible"].shape == (2, W300_68.num_points) and bool(batch["visible"].all())
    assert batch["norm"]["bbox"].shape == (2,)
    train_landmarks = np.stack([dm.datasets["train"][k]["landmarks"].numpy() for k in range(4)]).astype(np.float64)
    np.testing.assert_allclose(dm.mean_shape().numpy(), train_landmarks.mean(0), rtol=1e-12)
    # The test split is still COFW-68: the 1-based published annotations, shifted to 0-based.
    dm.setup("test")
    assert dm.test_source.name == "cofw68-test" and len(dm.datasets["test"]) == 3
    assert dm.protocol()["dataset"] == "cofw68-test"
    points = scipy.io.loadmat(COFW68_REAL / "1_points.mat")["Points"]
    np.testing.assert_allclose(dm.test_source.load(0).landmarks, points - 1)
    assert dm.hparams["train_set"] == "300w_lp" and dm.hparams["include_flipped"] is False


def test_300w_lp_flipped_twins_get_their_own_landmark_box(folders, aflw2000_shapes):
    cofw, _, lp = folders
    shapes, _ = aflw2000_shapes
    dm = COFW68DataModule(root=str(cofw), train_root=str(lp), train_set="300w_lp", include_flipped=True, **OPTIONS)
    train = dm.source("train")
    assert len(train) == 10 and train.protocol["include_flipped"] is True
    flipped = [i for i in range(len(train)) if "_Flip/" in train.image_id(i)]
    assert len(flipped) == 5
    for i in flipped:
        points = scipy.io.loadmat(lp / train.image_id(i).replace(".jpg", ".mat"))["pt2d"].T
        assert not np.array_equal(points, shapes[flipped.index(i)])  # mirrored: another box
        np.testing.assert_array_equal(train.load(i).boxes["given"], written_box(points))


def test_default_still_trains_on_300w(folders):
    cofw, w300, _ = folders
    dm = COFW68DataModule(root=str(cofw), train_root=str(w300), **OPTIONS)
    train = dm.source("train")
    assert dm.train_set == "300w" and train.name == "300w-train" and len(train) == 3
    assert dict(train.protocol) == {"one_based": True, "folders": ["afw", "helen_train", "lfpw_train"],
                                    "given_box": "landmarks"}
    for i in range(len(train)):
        pts = w300 / train.image_id(i).replace(".jpg", ".pts")
        points = np.loadtxt(pts, skiprows=3, max_rows=W300_68.num_points) - 1  # the .pts as written, 1-based
        np.testing.assert_array_equal(train.load(i).boxes["given"], written_box(points))


def test_the_training_set_is_part_of_the_checkpoint_identity(folders):
    cofw, w300, lp = folders
    on_300w = COFW68DataModule(root=str(cofw), train_root=str(w300), **OPTIONS)
    on_lp = COFW68DataModule(root=str(cofw), train_root=str(lp), train_set="300w_lp", **OPTIONS)
    differences = identity_differences({"data": data_identity(on_300w)}, {"data": data_identity(on_lp)})
    assert differences["data.train_set.name"] == ("300w-train", "300w-lp-train")
    assert differences["data.train_set.faces"] == (3, 5)


def test_unknown_train_set_and_misplaced_flip_fail_clearly():
    with pytest.raises(ValueError, match=r"train_set must be one of \['300w', '300w_lp'\], got '300W-LP'"):
        COFW68DataModule(root="x", train_root="y", train_set="300W-LP")
    with pytest.raises(ValueError, match="include_flipped .* needs train_set='300w_lp'"):
        COFW68DataModule(root="x", train_root="y", include_flipped=True)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(COFW68DataModule, "data")
    assert parser.get_defaults().data.train_set == "300w" and parser.get_defaults().data.include_flipped is False
    assert parser.parse_args(["--data.root=x", "--data.train_root=y", "--data.train_set=300w_lp"]).data.train_set \
        == "300w_lp"
    with pytest.raises(Exception, match="train_set"):
        parser.parse_args(["--data.root=x", "--data.train_root=y", "--data.train_set=lp"])


def test_a_wrong_300w_lp_folder_is_named(folders, tmp_path):
    cofw, w300, _ = folders
    for root, message in ((tmp_path / "none", r"none: 300W-LP folder is missing"), (w300, r"300W/AFW")):
        dm = COFW68DataModule(root=str(cofw), train_root=str(root), train_set="300w_lp", **OPTIONS)
        with pytest.raises(DatasetError, match=message):
            dm.source("train")


def test_a_manifest_can_train_cofw68_on_300w_lp(folders, tmp_path, capsys):
    experiment = Experiment("cofw68", "TAB", (), (), roots={"root": "cofw68", "train_root": "300w_lp"})
    opts = runner.RunOptions(data_root=tmp_path)
    roots = runner.dataset_roots(experiment, opts)
    assert roots == {"root": str(tmp_path / "COFW"), "train_root": str(tmp_path / "300W_LP")}
    problems = runner.check_datasets([experiment], opts)
    # COFW's folder is checked as COFW (its train .mat is absent here); 300W-LP as 300W-LP: its 5 faces and their
    # 5 _Flip twins against the published 2 x 61,225.
    assert problems == [f"cofw: incomplete or unreadable copy at {tmp_path / 'COFW'} (report above)",
                        f"300w_lp: incomplete or unreadable copy at {tmp_path / '300W_LP'} (report above)"]
    out = capsys.readouterr().out
    assert f"== 300w_lp at {tmp_path / '300W_LP'}" in out
    assert re.search(rf"train\s+all\s+10\s+{2 * 61225}\s+MISMATCH", out.split("== 300w_lp")[1])
