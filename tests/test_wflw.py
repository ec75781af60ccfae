"""WFLW list parsing, sources and datamodule on tiny trees written in the release's exact on-disk format.

The landmarks are four real WFLW faces (tests/data/wflw_coco, from mmpose) moved onto small synthetic images.
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import CHEER, DRESS, IMAGE_SIZES, LIST, SUBSETS, list_line, real_shapes, subset_files
from dataset_files import write_lines as write

from datamodules.base import NORMALIZERS
from datamodules.files import DatasetError, Problems
from datamodules.wflw import (
    ATTRIBUTES,
    EXPECTED_SUBSETS,
    WFLWDataModule,
    check_sources,
    read_wflw_list,
    read_wflw_subset_list,
    wflw_source,
)
from landmarks.geometry import apply_affine, invert_affine
from landmarks.layouts import WFLW_98


def small_datamodule(root: Path, **kw) -> WFLWDataModule:
    return WFLWDataModule(str(root), **({"check_counts": False, "input_size": 64, "batch_size": 2, "num_workers": 0,
                                         "val_size": 1} | kw))


def test_read_wflw_list_round_trip(wflw_tree):
    root, data = wflw_tree
    for split, written in data.items():
        parsed = read_wflw_list(root / LIST.format(split))
        assert [p.line for p in parsed] == [1, 2, 3]
        for p, f in zip(parsed, written, strict=True):
            assert p.landmarks.shape == (98, 2) and p.landmarks.dtype == np.float64
            np.testing.assert_array_equal(p.landmarks, f.landmarks)  # exact: same decimal text
            np.testing.assert_array_equal(p.box, f.box)
            assert p.attributes.tolist() == [bool(v) for v in f.flags] and p.image == f.image
    subset = read_wflw_subset_list(root / SUBSETS.format("largepose"))
    assert len(subset) == 1 and subset[0][1] == DRESS
    np.testing.assert_array_equal(subset[0][0], data["test"][0].landmarks)


def test_faces_are_indexed_by_line_with_subsets_from_flags(wflw_tree):
    root, data = wflw_tree
    source = wflw_source(root, "test", check_counts=False)
    assert len(source) == 3 and source.layout is WFLW_98 and source.subset_names == ATTRIBUTES
    assert source.image_id(0) == f"list_98pt_rect_attr_test.txt:1 {DRESS}"
    assert source.image_id(1) == f"list_98pt_rect_attr_test.txt:2 {DRESS}"
    first, second = source.load(0), source.load(1)
    np.testing.assert_array_equal(first.image, second.image)  # one image, two faces
    np.testing.assert_array_equal(first.landmarks, data["test"][0].landmarks)
    np.testing.assert_array_equal(second.landmarks, data["test"][1].landmarks)
    assert first.image.shape == (96, 128, 3) and first.visible.all()
    assert [source.records[i].subsets for i in range(3)] == [("pose", "occlusion"), ("expression",),
                                                             ("illumination", "makeup", "blur")]
    np.testing.assert_array_equal(first.boxes["given"], data["test"][0].box)
    assert source.load(2).landmarks[:, 0].min() < 0  # landmarks outside the image are kept
    assert source.protocol == {"annotation": "list_98pt_rect_attr_test.txt", "coordinates": "0-based as in the file"}
    assert source.expected_size == 2500 and source.expected_subsets == EXPECTED_SUBSETS
    sources = {k: build() for k, build in check_sources(root, on_error="skip", check_counts=False).items()}
    assert set(sources) == {"train", "test"} and sources["train"].expected_size == 7500
    assert sources["train"].records[2].subsets == ("pose", "blur") and not sources["test"].problems.errors


def test_subset_files_are_cross_checked_against_the_flags(wflw_tree):
    root, data = wflw_tree
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing files: no warning at all
        wflw_source(root, "test", check_counts=False)
    subset_files(root, data["test"], {"pose": [1], "blur": [0, 2]})  # pose lists face 1 (flag 0), not face 0
    with pytest.warns(UserWarning, match="flags are used") as record:
        source = wflw_source(root, "test", check_counts=False)
    message = str(record[0].message)
    assert "pose: 1 listed in list_98pt_test_largepose.txt with flag 0, 1 flagged but not listed" in message
    assert "blur: 1 listed in list_98pt_test_blur.txt with flag 0, 0 flagged" in message
    assert "expression" not in message
    assert source.records[0].subsets == ("pose", "occlusion")  # the flags stay the truth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wflw_source(root, "test", check_counts=False, cross_check_subsets=False)


def test_datamodule_crops_map_back_to_the_written_landmarks(wflw_tree):
    root, data = wflw_tree
    dm = small_datamodule(root)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["val"]) == 1 and len(dm.datasets["test"]) == 3
    assert dm.subset_names == ATTRIBUTES and dm.primary_normalizer == "inter_ocular"
    assert dm.protocol()["crop"]["box_source"] == "given" and dm.protocol()["crop"]["scale"] == 1.25
    for name, dataset in dm.datasets.items():
        for i in range(len(dataset)):
            sample = dataset[i]
            written = data["test" if name == "test" else "train"][sample["meta"]["index"]]
            assert sample["image"].shape == (3, 64, 64) and set(sample["norm"]) == set(NORMALIZERS)
            assert sample["subsets"] == tuple(t for t, f in zip(ATTRIBUTES, written.flags, strict=True) if f)
            back = apply_affine(sample["landmarks"].double().numpy(),
                                invert_affine(sample["meta"]["transform"].numpy()))
            np.testing.assert_allclose(back, written.landmarks, atol=1e-4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["landmarks"].shape == (2, 98, 2) and batch["norm"]["inter_ocular"].dtype == torch.float32


def test_published_counts(wflw_tree, tmp_path):
    root, data = wflw_tree
    with pytest.raises(DatasetError, match="7500"):
        small_datamodule(root, check_counts=True).setup("fit")
    # A full-size test list (one image reused) loads; subset sizes off the published ones only warn.
    full = [list_line(data["test"][i % 3]) for i in range(2500)]
    write(root / LIST.format("test"), full)
    with pytest.warns(UserWarning, match="subset sizes .* differ from the published"):
        source = wflw_source(root, "test", cross_check_subsets=False)
    assert len(source) == 2500


def test_flipping_a_real_face_twice_returns_it():
    for points in real_shapes():
        once = WFLW_98.flip_points(points, 1024)
        np.testing.assert_allclose(once[72, 0], 1023 - points[60, 0])  # outer eye corners swap sides
        np.testing.assert_allclose(WFLW_98.flip_points(once, 1024), points, atol=1e-12)


def edit_field(root: Path, line: int, column: int | None, value: str | None) -> None:
    """Replace (``value``) or delete (None) field ``column`` (1-based) of ``line`` of the test list."""
    path = root / LIST.format("test")
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split()
    if value is None:
        del fields[column - 1]
    else:
        fields[column - 1] = value
    lines[line - 1] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")


BAD_LINES = {
    "field count": (lambda root: edit_field(root, 2, 206, None), r"test\.txt:2: expected 207 fields, found 206"),
    "non-numeric": (lambda root: edit_field(root, 2, 5, "12,5"), r"test\.txt:2: field 5 is not a number: '12,5'"),
    "nan": (lambda root: edit_field(root, 2, 8, "nan"), r"test\.txt:2: non-finite landmark coordinates \(points \[3\]"),
    "flag": (lambda root: edit_field(root, 2, 203, "2"), r"test\.txt:2: attribute flags must be 0 or 1"),
    "missing image": (lambda root: (root / "WFLW_images" / CHEER).unlink(),
                      rf"test\.txt:3: image WFLW_images/{CHEER} is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_lines_raise_or_are_skipped_and_counted(wflw_tree, case):
    root, _ = wflw_tree
    breaks, message = BAD_LINES[case]
    breaks(root)
    with pytest.raises(DatasetError, match=message):
        wflw_source(root, "test", check_counts=False, cross_check_subsets=False)
    if case != "missing image":  # the parser alone: raises, or reports to the caller's Problems and skips
        with pytest.raises(DatasetError, match=message):
            read_wflw_list(root / LIST.format("test"))
        problems = Problems("wflw-test", "skip")
        assert [f.line for f in read_wflw_list(root / LIST.format("test"), problems)] == [1, 3]
        assert len(problems.errors) == 1
    dm = small_datamodule(root, on_error="skip", cross_check_subsets=False)
    with pytest.warns(UserWarning, match=r"wflw-test: skipped 1 bad sample") as record:
        source = dm.source("test")
    assert re.search(message, next(str(w.message) for w in record if "skipped" in str(w.message)))
    assert len(source) == 2 and len(source.problems.errors) == 1
    assert source.problems.errors[0].line == (3 if case == "missing image" else 2)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 2 and dm.datasets["test"][1]["landmarks"].shape == (98, 2)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_missing_files_and_folders_raise_in_both_modes(wflw_tree, on_error):
    root, _ = wflw_tree
    (root / LIST.format("train")).unlink()
    with pytest.raises(DatasetError, match=r"list_98pt_rect_attr_train\.txt: WFLW train list file is missing"):
        wflw_source(root, "train", on_error=on_error, check_counts=False)
    for image in IMAGE_SIZES:
        (root / "WFLW_images" / image).unlink()
        (root / "WFLW_images" / image).parent.rmdir()
    with pytest.raises(DatasetError, match=r"WFLW_images: WFLW images folder has no \* files"):
        wflw_source(root, "test", on_error=on_error, check_counts=False)
    with pytest.raises(ValueError, match="unknown WFLW split"):
        wflw_source(root, "val")
