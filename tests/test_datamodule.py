"""The sample contract, crop round trips, splits and worker seeding of the shared datamodule base."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from datamodules.augment import AugmentConfig
from datamodules.base import (
    NORMALIZERS,
    CropProtocol,
    FaceDataset,
    FaceSource,
    RawFace,
    collate_faces,
    split_indices,
)
from datamodules.files import DatasetError
from datamodules.synthetic import SyntheticFaceDataModule, SyntheticFaceSource
from landmarks.geometry import apply_affine, invert_affine
from landmarks.layouts import W300_68, WFLW_98
from landmarks.metrics import inter_ocular


def small_datamodule(**kw):
    args = dict(layout="300w_68", train_size=24, test_size=10, image_size=160, input_size=64, batch_size=4,
                num_workers=0, val_size=6)
    return SyntheticFaceDataModule(**(args | kw))


def test_sample_contract():
    dm = small_datamodule(augment=AugmentConfig())
    dm.setup("fit")
    s = dm.datasets["train"][0]
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
    assert s["landmarks"].shape == (68, 2) and s["landmarks"].dtype == torch.float32
    assert s["visible"].shape == (68,) and s["visible"].dtype == torch.bool
    assert set(s["norm"]) == set(NORMALIZERS) and all(v.ndim == 0 for v in s["norm"].values())
    assert isinstance(s["subsets"], tuple)
    assert set(s["meta"]) == {"index", "image_id", "original_size", "transform"}
    assert s["meta"]["transform"].shape == (2, 3)
    batch = collate_faces([dm.datasets["train"][i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 64) and batch["norm"]["bbox"].shape == (3,)
    assert batch["meta"]["transform"].shape == (3, 2, 3) and len(batch["subsets"]) == 3


def test_test_crops_map_back_to_original_landmarks():
    dm = small_datamodule(layout="wflw_98")
    dm.setup("test")
    source = dm.test_source
    for i in range(4):
        sample, raw = dm.datasets["test"][i], source.load(i)
        back = apply_affine(sample["landmarks"].double().numpy(), invert_affine(sample["meta"]["transform"].numpy()))
        np.testing.assert_allclose(back, raw.landmarks, atol=1e-4)
        # Normalisers are the original ones scaled by the crop: the NME is the same in both frames.
        scale = sample["norm"]["inter_ocular"].item() / inter_ocular(torch.from_numpy(raw.landmarks)[None],
                                                                     WFLW_98).item()
        crop_io = inter_ocular(sample["landmarks"].double()[None], WFLW_98).item()
        assert crop_io == pytest.approx(sample["norm"]["inter_ocular"].item(), rel=1e-5)
        assert scale == pytest.approx(float(np.sqrt(abs(np.linalg.det(sample["meta"]["transform"][:, :2])))), rel=1e-6)


def test_validation_split_is_carved_from_training_and_disjoint():
    train, val = split_indices(100, 0.2, seed=0)
    assert len(val) == 20 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.2, seed=0) == (train, val)
    assert split_indices(100, 7, seed=1)[1] != val[:7]
    with pytest.raises(ValueError, match="no training data"):
        split_indices(10, 10, seed=0)
    dm = small_datamodule()
    dm.setup("fit")
    dm.setup("test")
    assert dm.datasets["val"].source is dm.datasets["train"].source  # never the test source
    assert dm.datasets["test"].source.name.endswith("test")
    assert len(dm.datasets["train"]) == 18 and len(dm.datasets["val"]) == 6


def test_synthetic_faces_are_deterministic_and_splits_differ():
    a = SyntheticFaceSource("300w_68", "train", 5, seed=1, image_size=128)
    b = SyntheticFaceSource("300w_68", "train", 5, seed=1, image_size=128)
    t = SyntheticFaceSource("300w_68", "test", 5, seed=1, image_size=128)
    np.testing.assert_array_equal(a.load(3).image, b.load(3).image)
    np.testing.assert_array_equal(a.load(3).landmarks, b.load(3).landmarks)
    assert not np.array_equal(a.load(3).landmarks, t.load(3).landmarks)
    assert a.load(3).image_id == a.image_id(3)
    with pytest.raises(IndexError):
        a.load(5)


class BrokenSource(FaceSource):
    name, layout = "broken", W300_68

    def __init__(self, landmarks):
        self.landmarks = landmarks

    def __len__(self):
        return 1

    def image_id(self, index):
        return "face-0"

    def load(self, index):
        return RawFace(np.zeros((50, 50, 3), np.uint8), self.landmarks, np.ones(len(self.landmarks), bool), "face-0")


def test_bad_landmarks_raise_clear_errors():
    good = np.random.default_rng(0).uniform(10, 40, (68, 2))
    nan = good.copy()
    nan[3, 1] = np.nan
    with pytest.raises(DatasetError, match="^face-0: broken: non-finite"):
        FaceDataset(BrokenSource(nan), [0], 32, CropProtocol())[0]
    with pytest.raises(DatasetError, match=r"^face-0: .*shape \(5, 2\)"):
        FaceDataset(BrokenSource(good[:5]), [0], 32, CropProtocol())[0]
    with pytest.raises(DatasetError, match="^face-0: broken: no 'given' box"):
        FaceDataset(BrokenSource(good), [0], 32, CropProtocol(box_source="given"))[0]


def test_workers_get_distinct_augmentation_streams():
    dm = small_datamodule(augment=AugmentConfig(), num_workers=2, batch_size=1)
    dm.setup("fit")
    loader = torch.utils.data.DataLoader(dm.datasets["train"], batch_size=1, num_workers=2,
                                         collate_fn=collate_faces, worker_init_fn=dm.train_dataloader().worker_init_fn,
                                         sampler=[0, 0, 0, 0])
    # The same face drawn by two workers (and twice by each) must be augmented differently every time.
    crops = [b["landmarks"][0] for b in loader]
    for i in range(len(crops)):
        for j in range(i + 1, len(crops)):
            assert not torch.allclose(crops[i], crops[j])


def test_datamodule_rejects_unknown_normaliser_and_layout_mismatch():
    with pytest.raises(ValueError, match="primary_normalizer"):
        small_datamodule(primary_normalizer="eyes")
    with pytest.raises(ValueError, match="unknown landmark layout"):
        small_datamodule(layout="300w_69")


DATAMODULES = {
    "datamodules.synthetic.SyntheticFaceDataModule": {},
    "datamodules.w300.W300DataModule": {"root": "x"},
    "datamodules.w300.Masked300WDataModule": {"root": "x", "train_root": "y"},
    "datamodules.wflw.WFLWDataModule": {"root": "x"},
    "datamodules.cofw.COFWDataModule": {"root": "x"},
    "datamodules.cofw.COFW68DataModule": {"root": "x", "train_root": "y"},
    "datamodules.aflw.AFLWDataModule": {"root": "x"},
    "datamodules.aflw2000.AFLW2000DataModule": {"root": "x", "train_root": "y"},
}


@pytest.mark.parametrize("class_path", sorted(DATAMODULES))
def test_config_setting_one_crop_field_keeps_the_dataset_defaults(class_path):
    """`crop: {scale: 1.4}` in a config must keep the dataset's box source and normaliser box."""
    import importlib

    import yaml
    from jsonargparse import ArgumentParser

    from datamodules.base import FaceLandmarkDataModule

    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    default = cls(**DATAMODULES[class_path]).crop
    assert default.scale != 1.4
    parser = ArgumentParser()
    parser.add_subclass_arguments(FaceLandmarkDataModule, "data")  # as LightningCLI: class_path + init_args
    for crop in ({"scale": 1.4}, None):
        args = {**DATAMODULES[class_path], "num_workers": 0} | ({"crop": crop} if crop else {})
        config = yaml.safe_dump({"data": {"class_path": class_path, "init_args": args}})
        parsed = parser.instantiate(parser.parse_string(config)).data.crop
        assert parsed == (replace(default, scale=1.4) if crop else default)
    with pytest.raises(ValueError, match="unknown crop field"):
        cls(**DATAMODULES[class_path], crop={"size": 3})
