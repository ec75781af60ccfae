"""Pictures out (issue 19, item 3): failure galleries picked by per-image NME, per-landmark errors on the mean face,
training curves from CSV logs (resumed runs), ``test --save-overlays N`` and the report page that shows them.
Every expected value comes from an independent computation: numpy loops, Python sorts, hand-worked examples."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from record_fixtures import add, fixture_predictions, numpy_nme

from experiments.cli import main as cli_main
from leaderboard.curves import fit_log_dirs, plot_curves, read_curves
from leaderboard.gallery import MIN_SIDE, face_picture, pick_median, pick_worst, read_pictures, save_pictures
from leaderboard.overlays import COLOURS
from leaderboard.pictures import landmark_errors, mean_face, plot_record_landmark_errors
from leaderboard.render import main as render_main
from leaderboard.render import render_leaderboards
from leaderboard.store import load_predictions, load_records

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "experiments" / "hourglass" / "synthetic.yaml"
TINY = ["--data.init_args.train_size=12", "--data.init_args.val_size=2", "--data.init_args.test_size=7",
        "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
        '--trainer.logger={"class_path": "pytorch_lightning.loggers.CSVLogger", '
        '"init_args": {"save_dir": "runs", "name": "t"}}']


def reference_worst(nme, n):
    return sorted(range(len(nme)), key=lambda p: (-nme[p], p))[:n]


def reference_median(nme, n):
    ascending = sorted(range(len(nme)), key=lambda p: (nme[p], p))
    start = max(0, (len(nme) - n) // 2)
    return ascending[start:start + n]


def test_gallery_picks_worst_and_median_like_a_python_sort():
    nme = [5.0, 1.0, 5.0, 3.0, 9.0, 1.0, 7.0, 3.0, 5.0]
    assert pick_worst(np.array(nme), 3).tolist() == [4, 6, 0]  # hand-worked: 9, 7, then the first of the 5s
    assert pick_median(np.array(nme), 3).tolist() == [7, 0, 2]  # ascending 1 1 3 [3 5 5] 5 7 9
    rng = np.random.default_rng(0)
    for n_images, n in ((2500, 8), (10, 8), (5, 8), (7, 1), (6, 2)):
        values = np.round(rng.gamma(2.0, 2.0, n_images), 1)  # rounded: ties happen
        assert pick_worst(values, n).tolist() == reference_worst(values.tolist(), n)
        assert pick_median(values, n).tolist() == reference_median(values.tolist(), n)


class FakeFaces:
    """A test dataset of black 64 px crops whose crop is the original image scaled by 1/2 (counts fetches)."""

    input_size = 64

    def __init__(self, indices):
        self.indices, self.fetched = list(indices), []

    def cropped(self, index):
        self.fetched.append(index)
        return SimpleNamespace(image=np.zeros((64, 64, 3), np.uint8), matrix=np.array([[0.5, 0, 0], [0, 0.5, 0]]))


def test_save_pictures_fetches_only_the_chosen_faces_and_draws_them_where_they_are(tmp_path):
    predictions = fixture_predictions(seed=3, n=40, noise=6.0)
    predictions["index"] = np.arange(100, 140)
    record = {"record_id": "r1", "protocol": {"primary_normalizer": "bbox"}}
    faces = FakeFaces(range(140, 99, -1))  # the split's order: indices descending
    index = save_pictures(tmp_path, record, predictions, faces, gallery_size=4, overlays=3)
    listing = json.loads(index.read_text())
    nme = numpy_nme(predictions, column=1)  # bbox: the fixture's second normaliser
    assert [x["index"] - 100 for x in listing["worst"]] == reference_worst(nme.tolist(), 4)
    assert [x["index"] - 100 for x in listing["median"]] == reference_median(nme.tolist(), 4)
    assert [x["index"] for x in listing["overlays"]] == [139, 138, 137]
    assert [x["nme"] for x in listing["worst"]] == pytest.approx(sorted(nme, reverse=True)[:4], abs=1e-4)
    assert len(faces.fetched) == 4 + 4 + 3  # memory stays bounded: only the pictured faces are fetched
    assert read_pictures(tmp_path, "r1") == listing
    for item in listing["worst"] + listing["median"] + listing["overlays"]:
        image = cv2.imread(str(tmp_path / "pictures" / "r1" / item["file"]))
        assert image.shape == (MIN_SIDE, MIN_SIDE, 3)
    with pytest.raises(FileExistsError):  # pictures, like records, are never replaced
        save_pictures(tmp_path, record, predictions, faces, gallery_size=4)


def test_face_picture_marks_the_prediction_at_its_enlarged_crop_position():
    pred, truth = np.full((68, 2), np.nan), np.full((68, 2), np.nan)
    pred[0], truth[0] = (40.0, 60.0), (80.0, 20.0)
    pred[1] = truth[1] = (10.0, 10.0)  # two points so the marks have a size
    picture = face_picture(FakeFaces([0]), 0, pred, truth)
    # hand-worked: crop = original / 2 -> (20, 30); enlarged x3 with pixel centres kept: (20.5 * 3 - 0.5, ...)
    x, y = 20.5 * 3 - 0.5, 30.5 * 3 - 0.5
    assert tuple(picture[round(y), round(x)]) == COLOURS["prediction"]
    assert picture.shape == (192, 192, 3) and picture[150:, 150:].max() == 0  # nothing drawn far from the marks


def loop_landmark_errors(predictions, column, rows):
    pred, target, norm = predictions["pred"], predictions["target"], predictions["norm"][:, column]
    out = []
    for k in range(pred.shape[1]):
        errors = [math.hypot(*(pred[i, k] - target[i, k])) / norm[i] for i in rows]
        out.append(sum(errors) / len(errors))
    return np.array(out)


def test_landmark_errors_equal_a_numpy_loop_and_average_to_the_nme(tmp_path):
    predictions = fixture_predictions(seed=5, n=30, noise=3.0)
    errors = landmark_errors(predictions, "inter_ocular")
    np.testing.assert_allclose(errors, loop_landmark_errors(predictions, 0, range(30)), rtol=1e-12)
    assert errors.mean() * 100 == pytest.approx(numpy_nme(predictions).mean())
    rows = np.flatnonzero(predictions["subset_mask"][:, 1])  # subset "blur"
    np.testing.assert_allclose(landmark_errors(predictions, "bbox", "blur"), loop_landmark_errors(predictions, 1, rows))
    with pytest.raises(KeyError, match="unknown normaliser"):
        landmark_errors(predictions, "inter_pupil")
    # any stored record: its figure is a PNG
    add(tmp_path, 5, 3.0, "m", 1)
    (record,) = load_records(tmp_path)
    path = plot_record_landmark_errors(record, tmp_path, tmp_path / "lm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mean_face_is_box_normalised():
    base = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    # hand-worked: box centre (2, 0.5), sqrt(w h) = sqrt(4 * 1) = 2
    expected = np.array([[-1.0, -0.25], [1.0, -0.25], [-1.0, 0.25]])
    shapes = np.stack([base * 3 + (10, 20), base * 0.5 - (7, 1), base])  # moved and scaled copies
    np.testing.assert_allclose(mean_face(shapes), expected, atol=1e-12)
    other = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # centre (1, 1), size 2
    np.testing.assert_allclose(mean_face(np.stack([base, other])), (expected + [[-0.5, -0.5], [0.5, -0.5],
                                                                                 [-0.5, 0.5]]) / 2, atol=1e-12)


FIRST = """epoch,lr-Adam,step,train/loss,val/nme
,0.01,0,,
0,,1,4.0,
0,,3,2.0,
0,,3,,10.0
,0.005,4,,
1,,5,1.0,
1,,7,3.0,
1,,7,,nan
,0.0025,8,,
2,,9,9.0,
"""
RESUMED = """epoch,lr-Adam,step,train/loss,val/nme
,0.0025,8,,
2,,9,0.5,
2,,11,1.5,
2,,11,,4.0
,0.00125,12,,
3,,13,0.25,
3,,15,0.75,
3,,15,,3.0
4,,16,,
"""


def write_logs(root):
    """A training interrupted in epoch 2 (folder -9) and resumed (folder -10: after -9 in natural order)."""
    logs = root / "run" / "logs"
    for name, text in (("fit-20260101T000000-9", FIRST), ("fit-20260101T000000-10", RESUMED)):
        (logs / name).mkdir(parents=True)
        (logs / name / "metrics.csv").write_text(text)
    (logs / "test-x").mkdir()
    (logs / "test-x" / "metrics.csv").write_text("epoch,step,test/nme\n0,0,1.0\n")  # not a fit: never read
    return logs


def test_curves_join_resumed_folders_per_epoch(tmp_path):
    logs = write_logs(tmp_path)
    record = {"experiment": {"fit": {"log_dir": str(logs / "fit-20260101T000000-9")}}}
    folders = fit_log_dirs(record)
    assert [f.name for f in folders] == ["fit-20260101T000000-9", "fit-20260101T000000-10"]
    frame = read_curves(folders)
    # hand-worked: mean of each epoch's step losses; epoch 2 from the resumed run (the interrupted 9.0 replaced);
    # each epoch's rate is the one logged before its first step; epoch 1's NME was not finite (+inf, not "not
    # logged"); epoch 4 logged none of the curves (dropped)
    assert frame.index.tolist() == [0, 1, 2, 3]
    assert frame["train/loss"].tolist() == [3.0, 2.0, 1.0, 0.5]
    assert frame["lr-Adam"].tolist() == [0.01, 0.005, 0.0025, 0.00125]
    assert frame["val/nme"].tolist() == [10.0, np.inf, 4.0, 3.0]
    # epoch-level loss preferred to the steps'; a run that logged no validation and no rate
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.csv").write_text(
        "epoch,step,train/loss_step,train/loss_epoch\n0,1,5.0,\n0,3,1.0,\n0,3,,2.5\n1,5,1.0,\n1,5,,1.5\n")
    other = read_curves([tmp_path / "other"])
    assert list(other.columns) == ["train/loss"] and other["train/loss"].tolist() == [2.5, 1.5]
    png = plot_curves(other, tmp_path / "c.png", "no validation")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = {"checkpoint": {"path": str(tmp_path / "other" / "checkpoints" / "best.ckpt")}}
    assert fit_log_dirs(checkpoint) == [tmp_path / "other"]  # a plain `experiments.cli fit` run folder


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """A test pass of the mean-shape baseline on 7 synthetic faces with ``--save-overlays 3`` (cwd: a temp dir)."""
    folder = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["test", "--config", str(SYNTHETIC), *TINY, "--model=lightning_modules.mean_shape.MeanShapeModule",
                  "--save-overlays", "3"])
    return folder


def test_save_overlays_writes_the_first_faces_beside_the_record(tested):
    (record,) = load_records(tested / "results")
    folder = tested / "results" / "pictures" / record["record_id"]
    assert sorted(p.name[:11] for p in folder.glob("overlay-*.jpg")) == ["overlay-001", "overlay-002", "overlay-003"]
    listing = read_pictures(tested / "results", record["record_id"])
    assert [x["index"] for x in listing["overlays"]] == [0, 1, 2]
    nme = numpy_nme(load_predictions(record, tested / "results"), column=2)  # bbox, the primary normaliser
    assert [x["index"] for x in listing["worst"]] == reference_worst(nme.tolist(), 8)  # 7 faces: all of them
    assert all((folder / x["file"]).is_file() for kind in ("worst", "median", "overlays") for x in listing[kind])
    with pytest.raises(Exception, match="save.overlays"):  # a test-only option
        cli_main(["fit", "--config", str(SYNTHETIC), "--save-overlays", "3"], run=False)


def test_predict_save_overlays_draws_the_first_faces_on_their_images(tmp_path, monkeypatch):
    """``predict --save-overlays 2``: the landmark writer draws the first 2 faces by index, and only those."""
    monkeypatch.chdir(tmp_path)
    cli_main(["predict", "--config", str(SYNTHETIC), *TINY, "--model=lightning_modules.mean_shape.MeanShapeModule",
              "--save-overlays", "2"])
    drawn = sorted((tmp_path / "results" / "predicted").glob("overlays-*/*.jpg"))
    assert len(drawn) == 2
    (landmarks,) = (tmp_path / "results" / "predicted").glob("landmarks-*.npz")
    with np.load(landmarks) as arrays:
        assert len(arrays["index"]) == 7  # every face predicted, two drawn


def test_report_shows_galleries_landmark_errors_and_curves_with_files_that_exist(tested, tmp_path):
    logs = write_logs(tmp_path)
    add(tmp_path / "old", 4, 2.0, "old", 1, experiment={  # a reproduce record made before galleries
        "name": "exp-old", "data": "synthetic", "fit": {"checkpoint": "x.ckpt", "monitor": "val/nme", "score": 3.0,
                                                        "log_dir": str(logs / "fit-20260101T000000-10")}})
    out = tmp_path / "report"
    paths = render_leaderboards([tested / "results", tmp_path / "old"], out, n_boot=50, say=None, pictures=True)
    markdown, page = paths["markdown"].read_text(), paths["html"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links and all((out / link).is_file() for link in links)
    assert sum(link.startswith("gallery/") for link in links) == 7 + 7  # worst and median of the 7 faces
    assert sum(link.startswith("landmarks/") for link in links) == 2 and sum(
        link.startswith("curves/") for link in links) == 1
    assert "No gallery for old" in markdown and "## Training curves" in markdown
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    assert sum(s.startswith("data:image/jpeg") for s in sources) == 14 and len(sources) == len(links)
    # the command renders them by default
    assert render_main(["--results", str(tested / "results"), "--out", str(tmp_path / "cmd"), "--bootstrap",
                        "50"]) == 0
    assert (tmp_path / "cmd" / "gallery").is_dir() and (tmp_path / "cmd" / "landmarks").is_dir()
