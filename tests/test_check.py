"""The dataset checker on a tiny copy of every dataset, in its real on-disk format: it runs end to end,
reports each split against the published sizes, names unreadable files, and `all` walks DATA_ROOT."""

import io
import re
from functools import partial

import pytest
from dataset_files import (
    cofw68_folder,
    make_300w,
    make_aflw,
    make_aflw2000,
    make_w300lp,
    pick_faces,
    real_shape,
    write_face,
)
from dataset_files import faces as wflw_faces

from datamodules import aflw2000, check, registry, wflw
from datamodules.files import DatasetError


def run(dataset, root):
    out = io.StringIO()
    ok = check.check_dataset(dataset, root, workers=0, out=out)
    return ok, out.getvalue()


def test_checker_on_every_dataset_format(tmp_path, aflw2000_shapes):
    shapes, yaw = aflw2000_shapes
    data = tmp_path / "data"
    make_300w(data / "300W")
    for folder in ("helen", "lfpw", "ibug"):
        write_face(data / "Masked_300W" / folder, f"{folder}_0", real_shape(0))
    cofw68_folder(data / "COFW", tmp_path / "300W_for_cofw68")
    (data / "AFLW").mkdir()
    make_aflw(data / "AFLW")
    make_aflw2000(data / "AFLW2000-3D", shapes, yaw, pick_faces(yaw))
    make_w300lp(data / "300W_LP", shapes, flipped=False)
    expected = {"300w": "337", "masked300w": "689", "cofw": "507",
                "aflw2000": "2000", "300w_lp": "61225"}
    for dataset, published in expected.items():
        root = registry.DATASETS[dataset].root(data)
        ok, text = run(dataset, root)
        assert not ok and "MISMATCH" in text and published in text, (dataset, text)
    ok, text = run("aflw", data / "AFLW")  # 6 faces cannot hold the 20,000 / 4,386 split of `ra`
    assert not ok and ("MISSING" in text or "MISMATCH" in text)
    image = next((data / "AFLW2000-3D" / "AFLW2000").glob("*.jpg"))
    image.write_bytes(image.read_bytes()[:150])
    ok, text = run("aflw2000", data / "AFLW2000-3D")
    assert f"{image.name}: unreadable or truncated image" in text
    assert check.main(["all", "--data-root", str(data), "--workers", "0", "--no-decode"]) == 1


def test_checker_on_wflw(wflw_tree):
    root, data = wflw_tree
    ok, text = run("wflw", root)
    assert not ok and "7500" in text and "2500" in text and "MISMATCH" in text
    assert len(data["test"]) == len(wflw_faces()["test"])


def test_a_root_one_level_off_gets_the_folder_to_give(tmp_path, aflw2000_shapes, capsys):
    """The dataset's own sub-folder (too deep) or the data root (too high), for two datasets: the checker prints
    the folder the test wrote the dataset to; a correct root, even one missing 300W's optional private set
    (read from ``<root>/300W/...``, which a root named 300W must not mistake for itself), gets no hint."""
    shapes, yaw = aflw2000_shapes
    data = tmp_path / "data"
    aflw2000, w300 = data / "AFLW2000-3D", make_300w(data / "300W")
    make_aflw2000(aflw2000, shapes, yaw, pick_faces(yaw))
    for dataset, given, meant in [("aflw2000", aflw2000 / "AFLW2000", aflw2000), ("aflw2000", data, aflw2000),
                                  ("300w", w300 / "afw", w300), ("300w", data, w300)]:
        ok, text = run(dataset, given)
        hints = [line for line in text.splitlines() if "HINT" in line]
        assert not ok and len(hints) == 1 and hints[0].endswith(f"--root {meant}"), (dataset, given, text)
    for dataset, given in [("aflw2000", aflw2000), ("300w", w300), ("300w", tmp_path)]:
        assert "HINT" not in run(dataset, given)[1], (dataset, given)
    assert check.main(["all", "--data-root", str(w300), "--workers", "0", "--no-decode"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"--data-root {data}")


def test_the_loaders_missing_folder_errors_name_the_root_to_give(tmp_path, wflw_tree, aflw2000_shapes):
    """The datamodules' own errors (``require_folder`` / ``require_file``) carry the same hint."""
    root, _ = wflw_tree
    shapes, yaw = aflw2000_shapes
    make_aflw2000(tmp_path / "AFLW2000-3D", shapes, yaw, pick_faces(yaw))
    for build, given, meant in [(partial(wflw.wflw_source, split="test"), root / "WFLW_images", root),
                                (aflw2000.aflw2000_source, tmp_path / "AFLW2000-3D" / "AFLW2000",
                                 tmp_path / "AFLW2000-3D"),
                                (aflw2000.aflw2000_source, tmp_path, tmp_path / "AFLW2000-3D")]:
        with pytest.raises(DatasetError, match=re.escape(f"(hint: give {meant} as the dataset root)")):
            build(given, check_counts=False)
    with pytest.raises(DatasetError) as error:
        wflw.wflw_source(tmp_path / "AFLW2000-3D", "test", check_counts=False)
    assert "hint" not in str(error.value)
