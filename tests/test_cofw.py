"""COFW / COFW-68 parsers and datamodules: both MATLAB formats, the real COFW-68 files, crops, bad inputs."""


import h5py
import numpy as np
import pytest
import scipy.io
from dataset_files import COFW68_REAL as REAL
from dataset_files import cofw68_folder, cofw_folder, tiny_cofw, write_v5, write_v73

from datamodules.cofw import (
    COFW68DataModule,
    COFWDataModule,
    check_sources,
    cofw68_source,
    cofw_source,
    read_cofw68_annotation,
    read_cofw68_boxes,
    read_cofw_mat,
)
from datamodules.files import DatasetError
from landmarks.geometry import apply_affine, invert_affine, matrix_scale
from landmarks.layouts import W300_68

OPTIONS = dict(check_counts=False, input_size=64, batch_size=2, num_workers=0, val_size=1)


def test_both_matlab_versions_read_the_same(tmp_path):
    images, phis, boxes = tiny_cofw()
    v5 = read_cofw_mat(write_v5(tmp_path / "v5.mat", images, phis, boxes, "Tr"))
    v73 = read_cofw_mat(write_v73(tmp_path / "v73.mat", images, phis, boxes, "Tr"))
    assert h5py.is_hdf5(tmp_path / "v73.mat") and not h5py.is_hdf5(tmp_path / "v5.mat")
    for data in (v5, v73):
        assert len(data.images) == 3 and all(im.dtype == np.uint8 and im.shape[2] == 3 for im in data.images)
        np.testing.assert_array_equal(data.images[0], images[0])  # H x W x 3, not transposed
        np.testing.assert_array_equal(data.images[1], np.repeat(images[1][:, :, None], 3, 2))  # grey -> RGB
        np.testing.assert_array_equal(data.landmarks, np.stack([phis[:, :29], phis[:, 29:58]], -1))
        np.testing.assert_array_equal(data.occluded, phis[:, 58:] == 1)
        np.testing.assert_array_equal(data.boxes, boxes)
        assert data.landmarks.dtype == np.float64 and data.occluded.dtype == bool


def test_real_cofw68_files_parse():
    for i in (1, 2, 3):
        mat = scipy.io.loadmat(REAL / f"{i}_points.mat")
        points, occluded = read_cofw68_annotation(REAL / f"{i}_points.mat")
        assert points.shape == (68, 2) and occluded.shape == (68,) and occluded.dtype == bool
        np.testing.assert_array_equal(points, mat["Points"])
        np.testing.assert_array_equal(occluded, mat["Occ"].ravel() == 1)
    assert read_cofw68_annotation(REAL / "1_points.mat")[0][0].tolist() == pytest.approx([58.00626102, 31.04355995])
    boxes = read_cofw68_boxes(REAL / "cofw68_test_bboxes.mat")
    assert boxes.shape == (507, 4) and boxes.dtype == np.float64 and boxes[0].tolist() == [64, 9, 120, 116]


def test_cofw_datamodule_crops_map_back_and_keep_occlusion(tmp_path):
    root, (_, phis, boxes) = cofw_folder(tmp_path / "COFW")
    dm = COFWDataModule(root=str(root), **OPTIONS)
    dm.setup("fit")
    dm.setup("test")
    assert dm.primary_normalizer == "inter_pupil" and dm.crop.box_source == "given"
    assert dm.protocol()["annotation"] == {"one_based": True, "file": "COFW_test.mat"}
    assert dm.source("train").protocol["file"] == "COFW_train_color.mat"
    next(iter(dm.train_dataloader()))
    source = dm.test_source
    for i in range(3):
        sample = dm.datasets["test"][i]
        assert sample["meta"]["image_id"] == f"COFW_test.mat#{i + 1}"
        back = apply_affine(sample["landmarks"].double().numpy(), invert_affine(sample["meta"]["transform"].numpy()))
        np.testing.assert_allclose(back, np.stack([phis[i, :29], phis[i, 29:58]], -1) - 1, atol=1e-4)
        np.testing.assert_array_equal(sample["visible"].numpy(), phis[i, 58:] == 0)
        x, y, w, h = boxes[i]
        np.testing.assert_array_equal(source.load(i).boxes["given"], [x - 1, y - 1, x + w - 1, y + h - 1])
    kept = cofw_source(root, "test", one_based=False, check_counts=False)
    np.testing.assert_array_equal(kept.load(0).landmarks, np.stack([phis[0, :29], phis[0, 29:58]], -1))
    assert COFWDataModule(root=str(root), primary_normalizer="inter_ocular", **OPTIONS).primary_normalizer == \
        "inter_ocular"


def test_cofw68_datamodule(tmp_path):
    root = cofw68_folder(tmp_path / "COFW", tmp_path / "300W")
    dm = COFW68DataModule(root=str(root), train_root=str(tmp_path / "300W"), **OPTIONS)
    assert dm.layout_name == "300w_68" and dm.crop.bbox_norm_source == "given"
    dm.setup("fit")
    assert len(dm.source("train")) == 3 and dm.source("train").protocol["given_box"] == "landmarks"
    assert next(iter(dm.train_dataloader()))["landmarks"].shape == (2, 68, 2)
    dm.setup("test")
    boxes = read_cofw68_boxes(REAL / "cofw68_test_bboxes.mat")
    for i in range(3):
        sample = dm.datasets["test"][i]
        points, occluded = read_cofw68_annotation(REAL / f"{i + 1}_points.mat")
        transform = sample["meta"]["transform"].numpy()
        back = apply_affine(sample["landmarks"].double().numpy(), invert_affine(transform))
        np.testing.assert_allclose(back, points - 1, atol=1e-4)
        np.testing.assert_array_equal(sample["visible"].numpy(), ~occluded)
        w, h = boxes[i, 2:]
        assert sample["norm"]["bbox"].item() == pytest.approx(np.sqrt(w * h) * matrix_scale(transform), rel=1e-6)
        assert matrix_scale(transform) == pytest.approx(64 / (1.25 * max(w, h)))
    raw = dm.test_source.load(0)
    flipped = W300_68.flip_points(raw.landmarks, raw.image.shape[1])
    assert flipped[36, 0] < flipped[45, 0]  # the image-left eye stays on the left: 300W ordering
    np.testing.assert_allclose(W300_68.flip_points(flipped, raw.image.shape[1]), raw.landmarks)


def test_check_sources_lists_every_split(tmp_path):
    root = cofw68_folder(tmp_path / "COFW", tmp_path / "300W")
    write_v5(root / "COFW_train.mat", *tiny_cofw(2), suffix="Tr")
    sources = {k: build() for k, build in check_sources(root, on_error="skip", check_counts=False).items()}
    assert {k: len(v) for k, v in sources.items()} == {"train": 2, "test": 3, "cofw68": 3}
    assert sources["cofw68"].expected_size == 507 and sources["train"].expected_size == 1345


def test_cli_sees_the_datamodule_arguments():
    from jsonargparse import ArgumentParser

    for cls in (COFWDataModule, COFW68DataModule):
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "data")
        defaults = parser.get_defaults().data
        assert defaults.primary_normalizer == "inter_pupil" and defaults.one_based is True
        assert defaults.input_size == 256 and defaults.on_error == "raise" and defaults.check_counts is True


# ---- bad inputs ----

@pytest.mark.parametrize("writer", [write_v5, write_v73])
@pytest.mark.parametrize("drop", ["IsT", "phisT", "bboxesT"])
def test_missing_variable_names_file_and_variable(tmp_path, writer, drop):
    path = writer(tmp_path / "COFW_test_color.mat", *tiny_cofw(), drop=drop)
    with pytest.raises(DatasetError, match=rf"COFW_test_color\.mat: missing variable {drop[:-1]}Tr / {drop}"):
        read_cofw_mat(path)


@pytest.mark.parametrize("writer", [write_v5, write_v73])
def test_wrong_phis_width_and_count_mismatch(tmp_path, writer):
    images, phis, boxes = tiny_cofw()
    with pytest.raises(DatasetError, match=r"a\.mat: phis is 3 x 86, expected N x 87"):
        read_cofw_mat(writer(tmp_path / "a.mat", images, phis[:, :86], boxes))
    with pytest.raises(DatasetError, match=r"b\.mat: 3 images, 3 phis rows and 2 bboxes rows"):
        read_cofw_mat(writer(tmp_path / "b.mat", images, phis, boxes[:2]))


@pytest.mark.parametrize("writer", [write_v5, write_v73, None])
def test_truncated_or_garbage_mat(tmp_path, writer):
    path = tmp_path / "COFW_test_color.mat"
    if writer is None:
        path.write_bytes(b"this is not a MAT-file\n" * 20)
    else:
        data = writer(path, *tiny_cofw()).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"COFW_test_color\.mat: unreadable \.mat file"):
        read_cofw_mat(path)
    with pytest.raises(DatasetError, match=r"COFW_test_color\.mat: unreadable"):
        cofw_source(tmp_path, "test", on_error="skip", check_counts=False)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetError, match=r"COFW_test_color\.mat: COFW test file is missing .*COFW_test\.mat"):
        cofw_source(tmp_path, "test")
    with pytest.raises(DatasetError, match="COFW .mat file is missing"):
        read_cofw_mat(tmp_path / "nothing.mat")
    write_v5(tmp_path / "COFW_test.mat", *tiny_cofw())
    with pytest.raises(DatasetError, match=r"cofw68_test_bboxes\.mat: COFW-68 boxes file is missing"):
        cofw68_source(tmp_path, check_counts=False)


def test_bad_cofw68_annotation(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"Points": np.zeros((67, 2)), "Occ": np.zeros((1, 68))})
    with pytest.raises(DatasetError, match=r"a\.mat: Points is 67 x 2, expected 68 x 2"):
        read_cofw68_annotation(tmp_path / "a.mat")
    scipy.io.savemat(tmp_path / "b.mat", {"Points": np.zeros((68, 2))})
    with pytest.raises(DatasetError, match=r"b\.mat: missing variable 'Occ' \(the file has \['Points'\]\)"):
        read_cofw68_annotation(tmp_path / "b.mat")


def test_missing_cofw68_annotation_raises_or_is_skipped(tmp_path):
    root = cofw68_folder(tmp_path / "COFW", tmp_path / "300W", annotations=(1, 3))
    with pytest.raises(DatasetError, match=r"2_points\.mat: COFW-68 annotation file is missing"):
        cofw68_source(root, check_counts=False)
    dm = COFW68DataModule(root=str(root), train_root=str(tmp_path / "300W"), on_error="skip", **OPTIONS)
    with pytest.warns(UserWarning, match=r"cofw68-test: skipped 1 bad sample.*\n.*2_points\.mat"):
        source = dm.source("test")
    assert [source.image_id(i) for i in range(len(source))] == ["COFW_test_color.mat#1", "COFW_test_color.mat#3"]
    assert len(source.problems.errors) == 1 and len(source.images) == 2
    np.testing.assert_allclose(source.load(1).landmarks, read_cofw68_annotation(REAL / "3_points.mat")[0] - 1)


def test_nan_landmarks_raise_or_are_skipped(tmp_path):
    root, _ = cofw_folder(tmp_path, phis_edit=lambda phis: phis.__setitem__((1, 40), np.nan))
    with pytest.raises(DatasetError, match=r"COFW_test\.mat#2: non-finite landmark coordinates \(points \[11\]\)"):
        cofw_source(root, "test", check_counts=False)
    dm = COFWDataModule(root=str(root), on_error="skip", **OPTIONS)
    with pytest.warns(UserWarning, match="cofw-test: skipped 1 bad sample"):
        source = dm.source("test")
    assert len(source) == 2 and len(source.problems.errors) == 1 and source.image_id(1) == "COFW_test.mat#3"
    assert source.read_image(1).shape == (44, 44, 3)  # the images stay aligned with the kept faces


def test_counts_are_enforced(tmp_path):
    root = cofw68_folder(tmp_path / "COFW", tmp_path / "300W")
    write_v5(root / "COFW_train.mat", *tiny_cofw(2), suffix="Tr")
    for build, expected in [(lambda: cofw_source(root, "train"), 1345), (lambda: cofw_source(root, "test"), 507),
                            (lambda: cofw68_source(root), 507)]:
        with pytest.raises(DatasetError, match=f"the published split has {expected}"):
            build()
    with pytest.raises(DatasetError, match="published split has 507"):
        COFWDataModule(root=str(root), input_size=64).source("test")
