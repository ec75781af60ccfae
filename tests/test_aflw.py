"""AFLW-19, AFLW2000-3D and 300W-LP: parsers on tiny files in the real formats, protocols, datamodules, errors."""

import io
import math

import numpy as np
import pytest
import scipy.io
from dataset_files import NAMES, aflw_arrays, make_aflw, make_aflw2000, make_w300lp, original_of, pick_faces

from datamodules.aflw import AFLW_CROP, AFLWDataModule, aflw_source, read_aflw_info
from datamodules.aflw import check_sources as aflw_check_sources
from datamodules.aflw2000 import (
    AFLW2000_SUBSETS,
    AFLW2000DataModule,
    aflw2000_source,
    check_w300lp_sources,
    read_aflw2000_mat,
    read_w300lp_mat,
    w300lp_source,
    yaw_bin,
)
from datamodules.base import FaceLandmarkDataModule
from datamodules.check import check_dataset
from datamodules.files import DatasetError
from landmarks.geometry import apply_affine, invert_affine, points_bbox
from landmarks.layouts import W300_68

SMALL = dict(check_counts=False, input_size=64, batch_size=2, num_workers=0, val_size=1)


def test_read_aflw_info_reads_back_what_was_written(tmp_path):
    a = make_aflw(tmp_path)
    info = read_aflw_info(tmp_path / "AFLWinfo_release.mat", train_size=4)
    assert info.names == NAMES
    np.testing.assert_array_equal(info.landmarks[..., 0], a["data"][:, :19])
    np.testing.assert_array_equal(info.landmarks[..., 1], a["data"][:, 19:])
    np.testing.assert_array_equal(info.visible, a["mask_new"] == 1)
    x1, x2, y1, y2 = a["bbox"].T
    np.testing.assert_array_equal(info.boxes, np.stack([x1, y1, x2, y2], 1))
    assert info.train_index.tolist() == [2, 5, 0, 4] and info.test_index.tolist() == [1, 3]


def test_aflw_sources_split_by_ra_with_frontal_subset(tmp_path):
    a = make_aflw(tmp_path)
    train = aflw_source(tmp_path, "train", train_size=4, check_counts=False)
    test = aflw_source(tmp_path, "test", train_size=4, check_counts=False)
    assert [train.image_id(i) for i in range(len(train))] == [f"flickr/{NAMES[r]}" for r in (2, 5, 0, 4)]
    assert [test.image_id(i) for i in range(len(test))] == [f"flickr/{NAMES[r]}" for r in (1, 3)]
    assert test.subset_names == ("frontal",) and [r.subsets for r in test.records] == [("frontal",), ()]
    assert all(r.subsets == () for r in train.records)  # frontal is a test subset only
    face = test.load(1)
    assert face.image.shape == (96, 128, 3) and not face.visible.all()
    np.testing.assert_array_equal(face.landmarks, np.stack([a["data"][3, :19], a["data"][3, 19:]], 1))
    assert test.protocol == {"one_based": False, "train_size": 4, "frontal": "visible_in_box"}
    assert test.expected_size == 4386
    shifted = aflw_source(tmp_path, "test", one_based=True, train_size=4, check_counts=False)
    np.testing.assert_allclose(shifted.records[1].landmarks, face.landmarks - 1)
    np.testing.assert_allclose(shifted.records[1].boxes["given"], face.boxes["given"] - 1)
    assert shifted.protocol["one_based"] is True
    assert set(aflw_check_sources(tmp_path, train_size=4, on_error="skip", check_counts=False)) == {"train", "test"}


def test_frontal_definitions_differ_on_a_point_outside_the_box(tmp_path):
    """Test row 1 has every point visible; moved one point outside its box, it stays frontal by "all_visible"
    and leaves "visible_in_box" (SAN's test); each source counts both and records its choice."""
    arrays = aflw_arrays()
    data = arrays["data"].copy()
    x1, x2 = arrays["bbox"][1, 0], arrays["bbox"][1, 1]
    data[1, 5] = x2 + 3.0  # point 5 of row 1, x beyond the box's right edge
    make_aflw(tmp_path, data=data)
    strict = aflw_source(tmp_path, "test", train_size=4, check_counts=False)
    loose = aflw_source(tmp_path, "test", train_size=4, check_counts=False, frontal="all_visible")
    assert [r.subsets for r in strict.records] == [(), ()] and [r.subsets for r in loose.records] == [("frontal",), ()]
    assert loose.protocol["frontal"] == "all_visible" and strict.protocol["frontal"] == "visible_in_box"
    assert strict.extra_counts == {"frontal (19 visible, inside the box) <- 'frontal'": 0, "frontal (19 visible)": 1}
    assert x1 < data[1, 0] < x2  # the other points stay inside
    with pytest.raises(ValueError, match="frontal must be one of"):
        aflw_source(tmp_path, "test", train_size=4, check_counts=False, frontal="visible")
    report = io.StringIO()
    check_dataset("aflw", tmp_path, decode=False, out=report)
    assert "frontal (19 visible)" in report.getvalue() and "frontal (19 visible, inside the box)" in report.getvalue()


def check_crops_map_back(dataset, source, count):
    for i in range(count):
        sample = dataset[i]
        raw = source.load(sample["meta"]["index"])
        matrix = sample["meta"]["transform"].numpy()
        back = apply_affine(sample["landmarks"].double().numpy(), invert_affine(matrix))
        np.testing.assert_allclose(back, raw.landmarks, atol=1e-4)
        yield sample, raw, float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def test_aflw_datamodule_crops_and_face_size_normaliser(tmp_path):
    make_aflw(tmp_path)
    dm = AFLWDataModule(str(tmp_path), train_size=4, **SMALL)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (3, 1, 2)
    assert dm.primary_normalizer == "bbox" and dm.crop.box_source == dm.crop.bbox_norm_source == "given"
    assert dm.protocol()["annotation"] == {"one_based": False, "train_size": 4, "frontal": "visible_in_box"}
    assert dm.subset_names == ("frontal",)
    for sample, raw, scale in check_crops_map_back(dm.datasets["test"], dm.test_source, 2):
        x1, y1, x2, y2 = raw.boxes["given"]
        assert sample["norm"]["bbox"].item() == pytest.approx(math.sqrt((x2 - x1) * (y2 - y1)) * scale, rel=1e-5)
    assert list(check_crops_map_back(dm.datasets["train"], dm.source("train"), 3))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["landmarks"].shape == (2, 19, 2)


def test_aflw_crop_override_keeps_the_given_box():
    """A config that sets only crop.scale must not fall back to the landmark box (the AFLW normaliser)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AFLWDataModule, "data")
    crop = parser.instantiate(parser.parse_args(["--data.root=x", "--data.crop.scale=1.3"])).data.crop
    assert (crop.box_source, crop.bbox_norm_source, crop.scale) == ("given", "given", 1.3)
    assert AFLWDataModule("x", crop=None).crop == AFLW_CROP


@pytest.mark.parametrize("change, message", [
    ({"drop": ("mask_new",)}, r"AFLWinfo_release\.mat: missing variable 'mask_new'"),
    ({"ra": np.array([[3.0, 6, 1, 5, 2, 2]])}, r"AFLWinfo_release\.mat: 'ra' is not a permutation of 1\.\.6"),
    ({"ra": np.array([[0.0, 1, 2, 3, 4, 5]])}, "'ra' is not a permutation"),  # 0-based: not the release
    ({"bbox": np.zeros((6, 3))}, r"'bbox' has shape \(6, 3\), expected \(6, 4\)"),
    ({"data": np.zeros((6, 36))}, r"'data' has shape \(6, 36\)"),
])
def test_aflw_bad_info_file_raises_naming_it(tmp_path, change, message):
    change = dict(change)
    make_aflw(tmp_path, drop=change.pop("drop", ()), **change)
    with pytest.raises(DatasetError, match=message):
        aflw_source(tmp_path, "test", train_size=4, check_counts=False)


def test_aflw_bad_faces_raise_or_are_skipped_with_a_warning(tmp_path):
    data = aflw_arrays()["data"]
    data[5, 3] = np.nan  # a training face (row 5) with a NaN coordinate
    make_aflw(tmp_path, data=data)
    (tmp_path / "flickr" / NAMES[1]).unlink()  # test row 1: image missing
    with pytest.raises(DatasetError, match=r"row 6 \(flickr/3/image00005\.jpg\): non-finite"):
        aflw_source(tmp_path, "train", train_size=4, check_counts=False)
    with pytest.raises(DatasetError, match=r"flickr/0/image00002\.jpg: image file is missing"):
        aflw_source(tmp_path, "test", train_size=4, check_counts=False)
    dm = AFLWDataModule(str(tmp_path), train_size=4, **(SMALL | {"on_error": "skip"}))
    for split, remaining in (("train", 3), ("test", 1)):
        with pytest.warns(UserWarning, match=f"aflw-{split}: skipped 1 bad sample"):
            source = dm.source(split)
        assert len(source) == remaining and len(source.problems.errors) == 1


def test_aflw_counts_are_enforced(tmp_path):
    make_aflw(tmp_path)
    with pytest.raises(DatasetError, match="found 4 faces, the published split has 20000"):
        aflw_source(tmp_path, "train", train_size=4)
    with pytest.raises(DatasetError, match="has 4386"):
        AFLWDataModule(str(tmp_path), train_size=4).source("test")


def test_yaw_bins_boundaries_and_real_bin_sizes(aflw2000_shapes):
    assert [yaw_bin(y) for y in (0.0, 30.0, -30.0, 30.000001, 60.0, -60.0, 60.000001, -89.0, 351.2)] == [
        "yaw_0_30", "yaw_0_30", "yaw_0_30", "yaw_30_60", "yaw_30_60", "yaw_30_60", "yaw_60_90", "yaw_60_90",
        "yaw_60_90"]
    _, yaw = aflw2000_shapes
    tags = [yaw_bin(y) for y in yaw]
    assert {tag: tags.count(tag) for tag in AFLW2000_SUBSETS} == AFLW2000_SUBSETS
    assert sum(AFLW2000_SUBSETS.values()) == 2000


def test_aflw2000_source_ground_truths_and_yaw_subsets(tmp_path, aflw2000_shapes):
    shapes, yaw = aflw2000_shapes
    picks = pick_faces(yaw)
    folder = make_aflw2000(tmp_path, shapes, yaw, picks)
    points, face_yaw = read_aflw2000_mat(folder / f"image{picks[0]:05d}.mat")
    np.testing.assert_array_equal(points, original_of(shapes[picks[0]]))
    assert face_yaw == pytest.approx(yaw[picks[0]], abs=1e-9)
    original = aflw2000_source(tmp_path, check_counts=False)
    reannotated = aflw2000_source(tmp_path, "reannotated", check_counts=False)
    assert len(original) == len(reannotated) == len(picks)
    assert original.protocol["ground_truth"] == "original" and reannotated.protocol["ground_truth"] == "reannotated"
    assert reannotated.protocol["reannotated_file"] == "AFLW2000-3D-Reannotated.pts68.npy"
    for i, face in enumerate(picks):
        assert original.image_id(i) == f"AFLW2000/image{face:05d}.jpg"
        np.testing.assert_array_equal(original.records[i].landmarks, original_of(shapes[face]))
        np.testing.assert_allclose(reannotated.records[i].landmarks, shapes[face], atol=1e-4)
        assert original.records[i].subsets == reannotated.records[i].subsets == (yaw_bin(yaw[face]),)
    assert {r.subsets[0] for r in original.records} == set(AFLW2000_SUBSETS) == set(original.subset_names)
    assert any(yaw[face] < -30 for face in picks)  # a negative yaw is binned by its absolute value
    raw = original.load(0)
    assert raw.image.shape == (450, 450, 3) and raw.visible.all()
    np.testing.assert_array_equal(W300_68.flip_points(W300_68.flip_points(raw.landmarks, 450), 450), raw.landmarks)
    np.save(tmp_path / "full.npy", np.zeros((2000, 2, 68)))  # the complete file against a partial folder
    with pytest.raises(DatasetError, match=r"full\.npy: shape \(2000, 2, 68\), expected \(6, 2, 68\)"):
        aflw2000_source(tmp_path, "reannotated", reannotated_file=tmp_path / "full.npy", check_counts=False)


def test_aflw2000_bad_files_raise_or_are_skipped(tmp_path, aflw2000_shapes):
    shapes, yaw = aflw2000_shapes
    picks = pick_faces(yaw)
    folder = make_aflw2000(tmp_path, shapes, yaw, picks)
    scipy.io.savemat(folder / f"image{picks[1]:05d}.mat", {"pt3d_68": np.zeros((3, 68))})
    with pytest.raises(DatasetError, match=rf"image{picks[1]:05d}\.mat: missing variable 'Pose_Para'"):
        aflw2000_source(tmp_path, check_counts=False)
    (folder / f"image{picks[2]:05d}.jpg").unlink()
    bad = np.vstack([shapes[picks[3]].T, np.zeros((1, 68))])
    bad[0, 7] = np.nan
    scipy.io.savemat(folder / f"image{picks[3]:05d}.mat", {"pt3d_68": bad, "Pose_Para": np.zeros((1, 7))})
    skipped = aflw2000_source(tmp_path, on_error="skip", check_counts=False)
    assert len(skipped) == len(picks) - 3 and len(skipped.problems.errors) == 3
    messages = "\n".join(map(str, skipped.problems.errors))
    assert f"image{picks[2]:05d}.jpg: file is missing" in messages and "non-finite" in messages
    dm = AFLW2000DataModule(str(tmp_path), str(tmp_path / "unused"), **(SMALL | {"on_error": "skip"}))
    with pytest.warns(UserWarning, match="aflw2000-3d: skipped 3 bad sample"):
        assert len(dm.source("test")) == len(picks) - 3
    with pytest.raises(DatasetError, match=rf"image{picks[2]:05d}\.jpg: file is missing"):
        aflw2000_source(tmp_path, check_counts=False)
    with pytest.raises(DatasetError, match="published split has 2000"):
        aflw2000_source(tmp_path, on_error="skip")


def test_w300lp_lists_up_front_and_parses_lazily(tmp_path, aflw2000_shapes):
    shapes, _ = aflw2000_shapes
    make_w300lp(tmp_path, shapes)
    source = w300lp_source(tmp_path, check_counts=False)
    assert len(source) == 5 and source.protocol == {"include_flipped": False, "one_based": False}
    assert source.image_id(0) == "AFW/AFW_134212_1_0.jpg"
    np.testing.assert_array_equal(source.load(0).landmarks, shapes[0])
    np.testing.assert_array_equal(read_w300lp_mat(tmp_path / "AFW_Flip" / "AFW_134212_1_0.mat"),
                                  W300_68.flip_points(shapes[0], 450))
    assert len(w300lp_source(tmp_path, include_flipped=True, check_counts=False)) == 10
    assert check_w300lp_sources(tmp_path, check_counts=False)["train"]().expected_size == 2 * 61225
    scipy.io.savemat(tmp_path / "HELEN" / "HELEN_100032540_1_0.mat", {"Pose_Para": np.zeros((1, 7))})  # no pt2d
    source = w300lp_source(tmp_path, check_counts=False)  # listing does not parse
    assert source.image_id(2) == "HELEN/HELEN_100032540_1_0.jpg"
    with pytest.raises(DatasetError, match=r"HELEN_100032540_1_0\.mat: missing variable 'pt2d'"):
        source.load(2)
    (tmp_path / "IBUG" / "IBUG_image_003_1_0.mat").unlink()
    with pytest.raises(DatasetError, match=r"IBUG_image_003_1_0\.mat: file is missing"):
        w300lp_source(tmp_path, check_counts=False)
    skipped = w300lp_source(tmp_path, on_error="skip", check_counts=False)
    assert len(skipped) == 4 and len(skipped.problems.errors) == 1
    with pytest.raises(DatasetError, match="published split has 61225"):
        w300lp_source(tmp_path, on_error="skip")


def test_aflw2000_datamodule_trains_on_300w_lp_and_tests_by_yaw(tmp_path, aflw2000_shapes):
    shapes, yaw = aflw2000_shapes
    picks = pick_faces(yaw)
    make_aflw2000(tmp_path / "AFLW2000-3D", shapes, yaw, picks)
    make_w300lp(tmp_path / "300W_LP", shapes, flipped=False)
    dm = AFLW2000DataModule(str(tmp_path / "AFLW2000-3D"), str(tmp_path / "300W_LP"), ground_truth="reannotated",
                            **SMALL)
    assert isinstance(dm, FaceLandmarkDataModule) and dm.primary_normalizer == "bbox"
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (4, 1, len(picks))
    assert dm.protocol()["annotation"]["ground_truth"] == "reannotated"
    assert dm.subset_names == ("yaw_0_30", "yaw_30_60", "yaw_60_90")
    for sample, raw, scale in check_crops_map_back(dm.datasets["test"], dm.test_source, len(picks)):
        x1, y1, x2, y2 = points_bbox(raw.landmarks)
        assert sample["norm"]["bbox"].item() == pytest.approx(math.sqrt((x2 - x1) * (y2 - y1)) * scale, rel=1e-5)
        assert sample["subsets"] == raw.subsets
    assert list(check_crops_map_back(dm.datasets["train"], dm.source("train"), 4))
    with pytest.raises(ValueError, match="ground_truth must be one of"):
        AFLW2000DataModule("a", "b", ground_truth="new")
