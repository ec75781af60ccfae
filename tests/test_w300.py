"""300W parsing on the real `.pts` quirks, the folder tree, PWC / private / Masked splits, bad inputs, the
dataset checker, the crop cache and the crop window margin."""

import io
import re
import shutil
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import scipy.io
import torch
from conftest import DATA
from dataset_files import W300_REAL as REAL
from dataset_files import make_300w, real_shape, write_face, write_pts
from PIL import Image

from datamodules import check, w300
from datamodules.augment import AugmentConfig, LayoutHorizontalFlip
from datamodules.base import CropProtocol, FaceDataset
from datamodules.files import DatasetError, read_image
from datamodules.w300 import Masked300WDataModule, W300DataModule, read_300w_boxes, read_pts, w300_source
from landmarks.geometry import apply_affine, invert_affine
from landmarks.layouts import W300_68

SMALL = dict(check_counts=False, input_size=64, batch_size=2, num_workers=0, val_size=1)


def file_numbers(path: Path) -> np.ndarray:
    """Independent reference: the 68 'x y' lines after the 3 header lines, read with numpy."""
    lines = path.read_text().replace("\r", "").splitlines()
    return np.loadtxt(lines[3:71])


def test_read_pts_real_files_and_quirks(tmp_path):
    for path in REAL + [DATA / "300vw" / "000006.pts"]:
        np.testing.assert_array_equal(read_pts(path), file_numbers(path))
    raw = (DATA / "300w_pts" / "takeo.pts").read_text()
    assert not (DATA / "300w_pts" / "einstein.pts").read_text().endswith("\n")  # the real quirk is present
    assert (DATA / "300vw" / "000006.pts").read_bytes().count(b"\r\n") > 60  # CRLF, from another source
    variants = {"blank_tail.pts": raw + "\n\n  \n", "crlf.pts": raw.replace("\n", "\r\n"),
                "spacing.pts": raw.replace("n_points:  68", "n_points:68")}
    for name, text in variants.items():
        (tmp_path / name).write_text(text)
        np.testing.assert_array_equal(read_pts(tmp_path / name), read_pts(DATA / "300w_pts" / "takeo.pts"))


def test_read_pts_bad_files_name_file_and_line(tmp_path):
    pts = real_shape(0)
    bad = tmp_path / "bad.pts"
    write_pts(bad, pts)
    bad.write_text(bad.read_text().replace(f"{pts[4, 0]:.6f}", "12,5", 1))
    with pytest.raises(DatasetError, match=r"bad\.pts:8: expected two numbers"):
        read_pts(bad)
    write_pts(bad, pts[:67])
    bad.write_text(bad.read_text().replace("n_points:  67", "n_points:  68"))
    with pytest.raises(DatasetError, match=r"bad\.pts: header says n_points 68 but the file has 67"):
        read_pts(bad)
    bad.write_text("version: 1\nn_points: 68\n1 2\n")
    with pytest.raises(DatasetError, match="no '{ ... }' block"):
        read_pts(bad)
    with pytest.raises(DatasetError, match=r"missing\.pts: annotation file is missing"):
        read_pts(tmp_path / "missing.pts")


def test_real_images_greyscale_ppm_and_16_bit(tmp_path):
    grey, ppm = read_image(DATA / "300w_pts" / "einstein.jpg"), read_image(DATA / "300w_pts" / "takeo.ppm")
    assert grey.ndim == 3 and grey.shape[2] == 3 and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert ppm.dtype == np.uint8 and ppm.shape[2] == 3
    ramp = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 32)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # 16-bit greyscale PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    deep = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(deep[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "alpha.png").shape == (8, 8, 3)


def test_unreadable_and_truncated_images_are_named(tmp_path):
    data = (DATA / "300w_pts" / "san_test_1.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("cut.jpg", "text.jpg"):
        with pytest.raises(DatasetError, match=rf"{name}: unreadable or truncated image"):
            read_image(tmp_path / name)
    with pytest.raises(DatasetError, match="image file is missing"):
        read_image(tmp_path / "none.jpg")


def test_300w_tree_splits_subsets_and_round_trip(tmp_path):
    root = make_300w(tmp_path / "300W", private=True)
    dm = W300DataModule(str(root), **SMALL)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.source("train")) == 6 and len(dm.test_source) == 6
    assert dm.subset_names == ("common", "challenging")
    ids = [dm.test_source.image_id(i) for i in range(6)]
    assert "ibug/image_000 _01.jpg" in ids and any(i.startswith("lfpw/testset/") and i.endswith(".png") for i in ids)
    for i in range(len(dm.test_source)):
        sample, record = dm.datasets["test"][i], dm.test_source.records[i]
        np.testing.assert_array_equal(record.landmarks, read_pts(record.image.with_suffix(".pts")) - 1)
        back = apply_affine(sample["landmarks"].double().numpy(), invert_affine(sample["meta"]["transform"].numpy()))
        np.testing.assert_allclose(back, record.landmarks, atol=1e-4)
        assert sample["subsets"] == (("challenging",) if "ibug" in record.image_id else ("common",))
    assert dm.protocol()["annotation"]["one_based"] is True
    zero = W300DataModule(str(root), one_based=False, **SMALL).test_source
    np.testing.assert_array_equal(zero.records[0].landmarks, dm.test_source.records[0].landmarks + 1)
    private = W300DataModule(str(root), test_set="private", **SMALL).test_source
    assert private.subset_names == ("indoor", "outdoor") and len(private) == 4 and private.expected_size == 600
    assert W300DataModule(str(root), **SMALL).test_source.expected_subsets == {"common": 554, "challenging": 135}


def test_pwc_split_and_centroid_crop(tmp_path):
    root = make_300w(tmp_path / "300W", private=True)
    crop = CropProtocol(box_source="landmarks", scale=1.3, center="centroid")
    dm = W300DataModule(str(root), test_set="pwc", crop=crop, **SMALL)
    dm.setup("test")
    assert dm.subset_names == ("helen", "lfpw", "indoor", "outdoor", "ibug") and len(dm.test_source) == 10
    sample, record = dm.datasets["test"][0], dm.test_source.records[0]
    centre = apply_affine(record.landmarks.mean(0, keepdims=True), sample["meta"]["transform"].numpy())
    np.testing.assert_allclose(centre[0], [31.5, 31.5], atol=1e-9)  # the centroid is the crop centre
    side = (record.landmarks.max(0) - record.landmarks.min(0)).max() * 1.3
    assert 64 / side == pytest.approx(float(torch.linalg.det(sample["meta"]["transform"][:, :2])) ** 0.5)


def test_official_boxes_are_read_and_usable_as_crop_source(tmp_path):
    root = make_300w(tmp_path / "300W")
    (root / "Bounding_Boxes").mkdir()
    names = sorted(p.name for p in (root / "ibug").glob("*.jpg"))
    struct = np.empty((1, len(names)), dtype=[("imgName", "O"), ("bb_detector", "O"), ("bb_ground_truth", "O")])
    for j, name in enumerate(names):
        struct[0, j] = (name, np.array([[11.0, 12, 61, 70]]), np.array([[10.0, 10, 60, 66]]))
    scipy.io.savemat(root / "Bounding_Boxes" / "bounding_boxes_ibug.mat", {"bounding_boxes": struct})
    boxes = read_300w_boxes(root / "Bounding_Boxes" / "bounding_boxes_ibug.mat")
    np.testing.assert_array_equal(boxes[names[0]]["detector"], [11, 12, 61, 70])
    dm = W300DataModule(str(root), test_set="challenging", crop=CropProtocol(box_source="detector"), **SMALL)
    dm.setup("test")
    np.testing.assert_array_equal(dm.test_source.records[0].boxes["ground_truth"], [9, 9, 59, 65])  # 1-based
    # The detector box [11 12 61 70] is [10 11 60 69] 0-based: 50 x 58, centred on (35, 40).
    matrix = dm.datasets["test"][0]["meta"]["transform"].numpy()
    np.testing.assert_allclose(apply_affine(np.array([[35.0, 40.0]]), matrix), [[31.5, 31.5]], atol=1e-9)
    assert np.sqrt(np.linalg.det(matrix[:, :2])) == pytest.approx(64 / (58 * 1.25))
    scipy.io.savemat(root / "Bounding_Boxes" / "bounding_boxes_ibug.mat", {"boxes": np.zeros(3)})
    with pytest.raises(DatasetError, match="missing variable 'bounding_boxes'"):
        W300DataModule(str(root), test_set="challenging", **SMALL).source("test")
    with pytest.raises(DatasetError, match="no 'detector' box"):
        FaceDataset(W300DataModule(str(root), **SMALL).source("train"), [0], 32, CropProtocol("detector"))[0]


def test_masked_300w_with_box_files(tmp_path):
    train = make_300w(tmp_path / "300W")
    masked = tmp_path / "Masked_300W"
    for folder, n in (("helen", 2), ("lfpw", 1), ("ibug", 1)):
        for j in range(n):
            write_face(masked / folder, f"{folder}_{j}", real_shape(j))
    write_pts(masked / "ibug" / "ibug_0_bb.pts", np.array([[5.0, 6], [60, 6], [60, 70], [5, 70]]))
    dm = Masked300WDataModule(root=str(masked), train_root=str(train), **SMALL)
    assert len(dm.test_source) == 4 and dm.test_source.expected_subsets == {"common": 554, "challenging": 135}
    ibug = [r for r in dm.test_source.records if r.image_id.startswith("ibug/")][0]
    np.testing.assert_array_equal(ibug.boxes["given"], [4, 5, 59, 69])
    assert ibug.subsets == ("challenging",) and len(dm.source("train")) == 6


def test_bad_inputs_raise_or_are_counted_when_skipping(tmp_path):
    root = make_300w(tmp_path / "300W")
    (root / "afw" / "afw_0.jpg").unlink()  # missing image
    write_pts(root / "helen" / "trainset" / "short.pts", real_shape(0)[:60])  # wrong point count
    (root / "helen" / "trainset" / "short.jpg").write_bytes(b"")
    nan = real_shape(1)
    nan[5] = np.nan
    write_face(root / "lfpw" / "trainset", "nan", nan)
    with pytest.raises(DatasetError, match=r"afw_0\.pts: no image with this stem"):
        W300DataModule(str(root), **SMALL).source("train")
    dm = W300DataModule(str(root), on_error="skip", **SMALL)
    with pytest.warns(UserWarning, match="300w-train: skipped 3 bad sample"):
        source = dm.source("train")
    assert len(source) == 5 and len(source.problems.errors) == 3
    messages = "\n".join(map(str, source.problems.errors))
    assert "expected 68 points, found 60" in messages and "non-finite" in messages and "afw_0.pts" in messages
    with pytest.raises(DatasetError, match="300W folder is missing"):
        W300DataModule(str(tmp_path / "nowhere"), **SMALL).source("train")
    (tmp_path / "empty" / "ibug").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"ibug: 300W folder has no \*\.pts files"):
        W300DataModule(str(tmp_path / "empty"), test_set="challenging", **SMALL).source("test")
    with pytest.raises(DatasetError, match="found 2 faces, the published split has 337"):
        W300DataModule(str(make_300w(tmp_path / "complete")), check_counts=True).source("train")


def test_unusable_image_or_box_at_load_time(tmp_path):
    root = make_300w(tmp_path / "300W", per_folder=3)
    data = (root / "ibug" / "image_001 _01.jpg").read_bytes()
    (root / "ibug" / "image_001 _01.jpg").write_bytes(data[:200])
    far = real_shape(2) + 1000  # the landmark box lies outside the 96 x 80 image
    write_pts(root / "ibug" / "image_002 _01.pts", far)
    dm = W300DataModule(str(root), test_set="challenging", **SMALL)
    dm.setup("test")
    with pytest.raises(DatasetError, match=r"image_001 _01\.jpg: unreadable or truncated"):
        dm.datasets["test"][1]
    with pytest.raises(DatasetError, match=r"image_002 _01\.jpg: .*lies outside the 96x80 image"):
        dm.datasets["test"][2]
    skipping = W300DataModule(str(root), test_set="challenging", on_error="skip", **SMALL)
    skipping.setup("test")
    with pytest.warns(UserWarning, match="skipping bad face"):
        sample = skipping.datasets["test"][1]
    assert sample["meta"]["index"] == 0 and skipping.datasets["test"].skipped == 2


def test_flipping_a_real_sample_twice_returns_it():
    points = read_pts(DATA / "300w_pts" / "takeo.pts") - 1
    image = read_image(DATA / "300w_pts" / "takeo.ppm")
    flip = A.Compose([LayoutHorizontalFlip(W300_68.flip_permutation, p=1.0)],
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    once = flip(image=image, keypoints=points)
    twice = flip(image=once["image"], keypoints=once["keypoints"])
    np.testing.assert_array_equal(twice["image"], image)
    np.testing.assert_allclose(twice["keypoints"], points, atol=1e-5)
    np.testing.assert_allclose(once["keypoints"], W300_68.flip_points(points, image.shape[1]), atol=1e-5)


def test_checker_counts_problems_and_exit_codes(tmp_path, monkeypatch):
    root = make_300w(tmp_path / "data" / "300W", private=True)
    out = io.StringIO()
    assert not check.check_dataset("300w", root, workers=0, out=out)  # 2 per folder, not the published sizes
    assert "MISMATCH" in out.getvalue() and "337" in out.getvalue()
    monkeypatch.setattr(w300, "FOLDERS", {k: (v[0], 2) for k, v in w300.FOLDERS.items()})
    assert check.main(["300w", "--root", str(root), "--workers", "0"]) == 0
    data = (root / "afw" / "afw_1.jpg").read_bytes()
    (root / "afw" / "afw_1.jpg").write_bytes(data[:100])
    out = io.StringIO()
    assert not check.check_dataset("300w", root, workers=0, out=out)
    assert "afw_1.jpg: unreadable or truncated image" in out.getvalue()
    assert check.check_dataset("300w", root, decode=False, workers=0, out=io.StringIO())  # headers only
    shutil.rmtree(root / "ibug")
    out = io.StringIO()
    assert not check.check_dataset("300w", root, decode=False, workers=0, out=out)
    assert re.search(r"ibug +all +MISSING", out.getvalue()) and "ibug: 300W folder is missing" in out.getvalue()
    assert re.search(r"afw +all +2 +2\n", out.getvalue())  # the other folders are still checked (sizes patched)
    assert check.main(["all", "--data-root", str(tmp_path / "data"), "--workers", "0", "--no-decode"]) == 1
    (tmp_path / "no_datasets").mkdir()
    assert check.main(["all", "--data-root", str(tmp_path / "no_datasets"), "--no-decode"]) == 1


def test_crop_cache_serves_later_epochs_without_decoding(tmp_path, monkeypatch):
    root = make_300w(tmp_path / "300W")
    dm = W300DataModule(str(root), test_set="full", cache_dir=str(tmp_path / "cache"), **SMALL)
    dm.setup("test")
    first = [dm.datasets["test"][i] for i in range(6)]
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 6
    calls, read = [], type(dm.test_source).read_image
    monkeypatch.setattr(type(dm.test_source), "read_image", lambda self, i: calls.append(i) or read(self, i))
    again = FaceDataset(dm.test_source, range(6), 64, dm.crop, cache_dir=tmp_path / "cache")
    for a, b in zip(first, [again[i] for i in range(6)], strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["landmarks"], b["landmarks"])
        assert a["meta"]["image_id"] == b["meta"]["image_id"] and a["subsets"] == b["subsets"]
        assert all(torch.equal(a["norm"][k], b["norm"][k]) for k in a["norm"])
    assert calls == []  # nothing decoded
    other = FaceDataset(dm.test_source, range(6), 64, CropProtocol(scale=1.4), cache_dir=tmp_path / "cache")
    other[0]
    assert calls == [0]  # a different crop protocol is a different cache entry
    (next((tmp_path / "cache").rglob("0000001.npz"))).write_bytes(b"damaged")
    assert torch.equal(again[1]["image"], first[1]["image"]) and calls == [0, 1]  # rebuilt, not trusted


def test_margin_window_centre_equals_the_plain_crop(tmp_path):
    root = make_300w(tmp_path / "300W")
    source = w300_source(root, {"afw": ()}, "afw", check_counts=False)
    off = AugmentConfig(affine_p=0, flip_p=0, brightness_contrast_p=0, blur_p=0)
    plain = FaceDataset(source, [0, 1], 64, CropProtocol(), augment=off)
    wide = FaceDataset(source, [0, 1], 64, CropProtocol(), augment=off, margin=1.5)
    assert wide.window == 96
    for i in range(2):
        a, b = plain[i], wide[i]
        torch.testing.assert_close(a["landmarks"], b["landmarks"], atol=1e-4, rtol=0)
        torch.testing.assert_close(a["meta"]["transform"], b["meta"]["transform"], atol=1e-9, rtol=0)
        assert (a["image"] - b["image"]).abs().max() < 0.05  # same pixel grid; bilinear rounding only


def test_cli_trains_and_tests_on_a_300w_tree_and_records_the_protocol(tmp_path, monkeypatch):
    """The real-format datamodule through LightningCLI: layout linked, record carries the annotation protocol."""
    root = make_300w(tmp_path / "300W", per_folder=3)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "300w.yaml"
    config.write_text(f"""
seed_everything: 0
trainer:
  max_steps: 2
  limit_val_batches: 1
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: leaderboard.callback.EvaluationRecorder
      init_args: {{results_dir: results, method: tiny}}
model:
  class_path: lightning_modules.hourglass.StackedHourglassModule
  init_args: {{num_stacks: 1, depth: 2, channels: 16}}
data:
  class_path: datamodules.w300.W300DataModule
  init_args:
    root: {root}
    test_set: full
    check_counts: false
    input_size: 64
    batch_size: 4
    num_workers: 0
    val_size: 2
    crop: {{box_source: landmarks, scale: 1.3, center: centroid}}
""")
    from experiments.cli import main as cli_main
    from leaderboard.store import load_records

    cli = cli_main(["fit", "--config", str(config), "--trainer.default_root_dir=fit"])
    assert cli.model.layout.name == "300w_68" and isinstance(cli.datamodule.crop, CropProtocol)
    cli_main(["test", "--config", str(config), "--trainer.default_root_dir=test"])
    (record,) = load_records(tmp_path / "results")
    assert record["protocol"]["annotation"] == {"one_based": True, "folders": ["helen_test", "lfpw_test", "ibug"]}
    assert record["protocol"]["crop"]["center"] == "centroid" and record["test_set"] == "300w-full"
