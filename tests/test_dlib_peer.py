"""dlib's pretrained ERT as an evaluation-only peer (lightning_modules/peers/dlib_ert.py), on the real 300W-format
photos of tests/data/300w_pts: our whole pipeline (300W crop, predict, map back, score) agrees with dlib run
directly on the original photo from the same box, its NME is plausible for dlib on 300W faces, the CLI config runs
it as a leaderboard row with its protocol, and what it must refuse it refuses."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")

from datamodules.dataset import IMAGENET_MEAN, IMAGENET_STD, FaceDataset, collate_faces  # noqa: E402
from datamodules.files import read_image  # noqa: E402
from datamodules.w300 import W300_CROP, read_pts, w300_source  # noqa: E402
from lightning_modules.peers.dlib_ert import DlibERTModule, predict_shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "300w_pts"
PHOTOS = ("breakingbad.jpg", "einstein.jpg", "san_test_1.jpg", "takeo.ppm")
# The pipeline resamples the photo into a 256 px crop (area-reduced where the face is larger), so dlib reads other
# pixels than on the photo. Measured (pipeline / direct inter-ocular NME, %): breakingbad 4.66 / 4.37, einstein
# 6.47 / 6.89, san_test_1 1.85 / 1.93, takeo 3.46 / 3.60; the two predictions differ by 0.7 to 2.7 % of the eye
# distance on average. Tolerances: 1 point of NME and 4 %.
NME_TOLERANCE, POINT_TOLERANCE = 0.01, 0.04


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The four photos as a 300W copy: the same faces in the training folders and in ibug (the test set)."""
    root = tmp_path_factory.mktemp("data") / "300W"
    for folder in ("afw", "helen/trainset", "lfpw/trainset", "ibug"):
        (root / folder).mkdir(parents=True)
        for photo in PHOTOS:
            for path in (DATA / photo, (DATA / photo).with_suffix(".pts")):
                shutil.copy(path, root / folder / path.name)
    return root


def truth_of(image_id: str) -> np.ndarray:
    """The .pts points, 1-based in the file, as pixel centres (independent of the datamodule's parsing)."""
    return read_pts(DATA / Path(image_id).with_suffix(".pts").name) - 1


def nme(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error over the outer eye-corner distance (points 36 and 45), by a plain loop."""
    d = np.hypot(*(truth[36] - truth[45]))
    return sum(np.hypot(*(p - g)) for p, g in zip(points, truth, strict=True)) / len(truth) / d


def test_the_pipeline_agrees_with_dlib_on_the_original_photo(tree):
    source = w300_source(tree, {"ibug": ("challenging",)}, "photos", check_counts=False)
    dataset = FaceDataset(source, range(len(source)), 256, W300_CROP)
    batch = collate_faces([dataset[i] for i in range(len(dataset))])
    model = DlibERTModule()
    with torch.no_grad():
        outputs = model(batch["image"])
    pipeline = model.to_original(model.decode(outputs), batch).numpy()
    crops = model.to_uint8(batch["image"])
    errors = {}
    for i, image_id in enumerate(batch["meta"]["image_id"]):
        truth, photo = truth_of(image_id), read_image(DATA / Path(image_id).name)
        # The box dlib got in the crop, taken back to the photo through the crop's similarity (no rotation:
        # crop = s * original + t), and dlib run there directly.
        box, _ = model.face_box(crops[i])
        matrix = batch["meta"]["transform"][i].numpy()
        scale, shift = matrix[0, 0], matrix[:, 2]
        direct = predict_shape(photo, np.r_[(box[:2] - shift) / scale, (box[2:] - shift) / scale])
        errors[image_id] = nme(pipeline[i], truth)
        assert abs(errors[image_id] - nme(direct, truth)) < NME_TOLERANCE, image_id
        assert nme(pipeline[i], direct) < POINT_TOLERANCE, image_id
    # dlib on 300W faces: a few percent of the inter-ocular distance (measured 1.9 to 6.5 % on these four).
    assert all(e < 0.08 for e in errors.values()), errors
    assert np.mean(list(errors.values())) < 0.06


def test_the_cli_config_tests_it_without_a_checkpoint_and_records_its_protocol(tree, tmp_path, monkeypatch):
    from experiments.cli import cli
    from leaderboard.store import load_predictions, load_records

    monkeypatch.chdir(tmp_path)
    assert cli(["test", "--config", str(ROOT / "experiments" / "peers" / "dlib.yaml"), "--config",
                str(ROOT / "experiments" / "data" / "300w.yaml"), f"--data.init_args.root={tree}",
                "--data.init_args.test_set=challenging", "--data.init_args.check_counts=false",
                "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false"]) == 0
    (record,) = load_records(tmp_path / "results")
    assert record["method"].startswith("dlib") and record["train_set"] == DlibERTModule.trained_on
    assert record["checkpoint"]["path"] is None and record["protocol"]["input_size"] == 256
    peer = record["protocol"]["peer"]
    assert peer["box_mode"] == "hog" and "HOG" in peer["box"] and len(peer["model_sha256"]) == 64
    assert 0.0 <= record["diagnostics"]["box_fallback"] <= 1.0
    predictions = load_predictions(record, tmp_path / "results")
    by_id = dict(zip(predictions["image_id"], predictions["pred"], strict=True))
    errors = [nme(by_id[image_id], truth_of(image_id)) for image_id in by_id]
    assert len(errors) == 4
    assert record["metrics"]["inter_ocular"]["full"]["nme"] == pytest.approx(100 * np.mean(errors), abs=1e-3)


def test_it_refuses_other_layouts_and_training():
    with pytest.raises(ValueError, match="68 points of the iBUG 300-W markup.*wflw_98"):
        DlibERTModule(layout="wflw_98")
    with pytest.raises(ValueError, match="box must be one of"):
        DlibERTModule(box="landmarks")
    model = DlibERTModule()
    assert not list(model.parameters())
    for call in (model.configure_optimizers, lambda: model.training_step({}, 0)):
        with pytest.raises(RuntimeError, match="evaluation-only"):
            call()


def test_normalised_crops_turn_back_into_the_exact_pixels():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    for mean, std in ((IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))):
        # as FaceDataset normalises: float32 (pixel - 255 mean) / (255 std)
        normalised = (pixels.astype(np.float32) - np.float32(255) * np.asarray(mean, np.float32)) / (
            np.float32(255) * np.asarray(std, np.float32))
        model = DlibERTModule(input_size=32)
        model.configure_input(mean, std, 1.25)
        np.testing.assert_array_equal(model.to_uint8(torch.from_numpy(normalised.transpose(0, 3, 1, 2))), pixels)


def test_the_box_in_the_crop():
    model = DlibERTModule(input_size=256)
    # the crop maps the box's longer side to 256 / 1.25 = 204.8 px, centred on the crop centre (127.5, 127.5)
    np.testing.assert_allclose(model.crop_box(), [25.1, 25.1, 229.9, 229.9])
    blank = np.full((256, 256, 3), 128, np.uint8)
    box, fell_back = model.face_box(blank)  # no face for the detector: the crop protocol's box
    assert fell_back and np.array_equal(box, model.crop_box())
    box, fell_back = DlibERTModule(box="crop").face_box(blank)
    assert not fell_back and np.array_equal(box, model.crop_box())


def test_the_model_file_is_found_without_importing_its_package():
    code = ("import sys; from lightning_modules.peers.dlib_ert import model_path; p = model_path(); "
            "print(p, p.stat().st_size, 'face_recognition_models' in sys.modules, 'pkg_resources' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path, size, package, pkg_resources = out.stdout.split()
    assert Path(path).name == "shape_predictor_68_face_landmarks.dat" and int(size) > 90_000_000
    assert package == pkg_resources == "False"
