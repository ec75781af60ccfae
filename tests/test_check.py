"""The dataset checker on a tiny copy of every dataset, in its real on-disk format: it runs end to end,
reports each split against the published sizes, names unreadable files, and `all` walks DATA_ROOT."""

import io

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

from datamodules import check, registry


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
