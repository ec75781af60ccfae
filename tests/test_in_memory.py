"""In-memory faces (each face cropped once per dataset at setup, samples unchanged) and the training set's
mean shape (from annotations, checked against a numpy loop over hand-built crop matrices)."""

import random

import numpy as np
import pytest
import torch
from dataset_files import make_300w, real_shape, write_pts

from datamodules.augment import AugmentConfig
from datamodules.base import collate_faces, split_indices
from datamodules.faces import RecordSource
from datamodules.files import DatasetError
from datamodules.synthetic import SyntheticFaceDataModule, SyntheticFaceSource
from datamodules.w300 import W300DataModule

SMALL = dict(layout="300w_68", train_size=30, test_size=6, image_size=120, input_size=48, batch_size=4,
             num_workers=0, val_size=6)
W300 = dict(check_counts=False, input_size=48, batch_size=2, num_workers=0, val_size=1)


def synthetic(**kw) -> SyntheticFaceDataModule:
    return SyntheticFaceDataModule(**(SMALL | kw))


def assert_same_sample(a: dict, b: dict) -> None:
    for key in ("image", "landmarks", "visible"):
        assert torch.equal(a[key], b[key]), key
    assert all(torch.equal(a["norm"][k], b["norm"][k]) for k in a["norm"])
    assert torch.equal(a["meta"]["transform"], b["meta"]["transform"]) and a["subsets"] == b["subsets"]
    assert {k: v for k, v in a["meta"].items() if k != "transform"} == \
        {k: v for k, v in b["meta"].items() if k != "transform"}


@pytest.mark.parametrize("workers", [0, 2])
def test_in_memory_faces_give_the_same_samples_and_augmentation_stream(workers):
    augment = AugmentConfig(dropout_p=0.5)
    lazy = synthetic(augment=augment, margin=1.25, in_memory=False)
    kept = synthetic(augment=augment, margin=1.25, num_workers=workers)  # in memory by default
    assert kept.in_memory and not lazy.in_memory
    for dm in (lazy, kept):
        dm.setup("fit")
        dm.setup("test")
    for split in ("train", "val", "test"):
        assert kept.datasets[split].memory is not None and lazy.datasets[split].memory is None
        for _ in range(2):  # two epochs: the augmentation stream goes on identically
            for i in range(len(lazy.datasets[split])):
                assert_same_sample(lazy.datasets[split][i], kept.datasets[split][i])


@pytest.mark.parametrize("workers", [0, 2])
def test_preloading_leaves_the_global_random_streams_alone(workers):
    """Same seed, same run: the shuffled order and the workers' augmentation seeds come from torch's global stream."""
    batches, draws = [], []
    for in_memory in (False, True):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        dm = synthetic(augment=AugmentConfig(), num_workers=workers, in_memory=in_memory)
        dm.setup("fit")
        dm.mean_shape()
        batches.append(next(iter(dm.train_dataloader())))
        draws.append((torch.rand(1).item(), np.random.rand(), random.random()))
    assert draws[0] == draws[1]
    assert torch.equal(batches[0]["meta"]["index"], batches[1]["meta"]["index"])
    assert torch.equal(batches[0]["image"], batches[1]["image"])


def test_each_face_is_rendered_once_per_dataset(monkeypatch):
    calls = []
    load = SyntheticFaceSource.load
    monkeypatch.setattr(SyntheticFaceSource, "load", lambda self, i: calls.append((self.split, i)) or load(self, i))
    dm = synthetic(augment=AugmentConfig())
    dm.setup("fit")
    dm.setup("fit")
    assert sorted(calls) == [("train", i) for i in range(30)]  # training and validation faces, once each
    for _ in range(3):  # epochs
        assert sum(len(b["image"]) for b in dm.train_dataloader()) == 24
        assert sum(len(b["image"]) for b in dm.val_dataloader()) == 6
    dm.mean_shape()
    assert len(calls) == 30
    dm.setup("test")
    assert sorted(calls[30:]) == [("test", i) for i in range(6)]


def test_windows_are_one_read_only_array_identical_in_every_process():
    one, other = synthetic(), synthetic(num_workers=2)  # as two DDP processes would build them
    one.setup("fit")
    other.setup("fit")
    train = one.datasets["train"]
    windows = {id(face.image.base) for face in train.memory.values()}
    assert len(windows) == 1 and train.memory[train.indices[0]].image.base.nbytes == 24 * 48 * 48 * 3
    assert all(not face.image.flags.writeable for face in train.memory.values())
    for index in train.indices:
        np.testing.assert_array_equal(train.memory[index].image, other.datasets["train"].memory[index].image)
    # A forked worker reads the same windows: un-augmented samples are those of the main process.
    val = one.datasets["val"]
    loader = torch.utils.data.DataLoader(val, batch_size=3, num_workers=2, collate_fn=collate_faces)
    batches = list(loader)
    expected = collate_faces([val[i] for i in range(len(val))])
    assert torch.equal(torch.cat([b["image"] for b in batches]), expected["image"])
    assert torch.equal(torch.cat([b["landmarks"] for b in batches]), expected["landmarks"])


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_faces_keep_their_error_in_memory(tmp_path, workers):
    root = make_300w(tmp_path / "300W", per_folder=3)
    data = (root / "ibug" / "image_001 _01.jpg").read_bytes()
    (root / "ibug" / "image_001 _01.jpg").write_bytes(data[:200])
    write_pts(root / "ibug" / "image_002 _01.pts", real_shape(2) + 1000)  # the box lies outside the image
    dm = W300DataModule(str(root), test_set="challenging", in_memory=True, **(W300 | {"num_workers": workers}))
    dm.setup("test")  # the errors come back from the cropping workers, intact
    with pytest.raises(DatasetError, match=r"image_001 _01\.jpg: unreadable or truncated"):
        dm.datasets["test"][1]
    with pytest.raises(DatasetError, match=r"image_002 _01\.jpg: .*lies outside the 96x80 image"):
        dm.datasets["test"][2]
    skipping = W300DataModule(str(root), test_set="challenging", in_memory=True, on_error="skip", **W300)
    skipping.setup("test")
    with pytest.warns(UserWarning, match="skipping bad face"):
        sample = skipping.datasets["test"][1]
    assert sample["meta"]["index"] == 0 and skipping.datasets["test"].skipped == 2


def crop_matrix_by_hand(box: np.ndarray, scale: float, size: int) -> np.ndarray:
    """The square crop of side ``scale * max(w, h)`` centred on the box, edges at -0.5 and size - 0.5."""
    s = size / (scale * max(box[2] - box[0], box[3] - box[1]))
    c = (size - 1) / 2
    return np.array([[s, 0, c - s * (box[0] + box[2]) / 2], [0, s, c - s * (box[1] + box[3]) / 2]])


def test_mean_shape_is_the_mean_of_the_unaugmented_training_crops():
    dm = synthetic(augment=AugmentConfig(), margin=1.5)
    dm.setup("fit")
    mean = dm.mean_shape()
    assert mean.shape == (68, 2) and mean.dtype == torch.float64
    source = dm.source("train")
    train, val = split_indices(30, 6, 0)
    points = []
    for i in train:  # a numpy loop: each face's landmarks through its own crop matrix
        face = source.load(i)
        m = crop_matrix_by_hand(face.boxes["jittered"], 1.25, 48)
        points.append(face.landmarks @ m[:, :2].T + m[:, 2])
    np.testing.assert_allclose(mean.numpy(), np.mean(points, 0), atol=1e-4, rtol=0)  # float32 samples
    everything = np.mean(points + [source.load(i).landmarks @ m[:, :2].T + m[:, 2] for i in val], 0)
    assert np.abs(mean.numpy() - everything).max() > 1e-3  # the validation faces are left out
    # The samples carry exactly these landmarks: their mean in float64 is the mean shape, to the last bit.
    crops = dm.training_crops()
    samples = np.stack([crops[k]["landmarks"].numpy() for k in range(len(crops))]).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), samples.mean(0), atol=1e-12, rtol=0)
    # Cached, and a copy each time; the same without the faces in memory (the source's annotations).
    dm.datasets["train"].crop_landmarks = None
    again = dm.mean_shape()
    again += 1
    assert torch.equal(dm.mean_shape(), mean)
    lazy = synthetic(augment=AugmentConfig(), margin=1.5, in_memory=False)
    assert torch.equal(lazy.mean_shape(), mean)


def test_mean_shape_of_a_list_dataset_decodes_no_image(tmp_path, monkeypatch):
    root = make_300w(tmp_path / "300W", per_folder=3)
    dm = W300DataModule(str(root), **W300)
    crops = dm.training_crops()
    samples = np.stack([crops[k]["landmarks"].numpy() for k in range(len(crops))]).astype(np.float64)

    def no_decoding(self, index):
        raise AssertionError("decoded an image")

    monkeypatch.setattr(RecordSource, "read_image", no_decoding)
    mean = W300DataModule(str(root), **W300).mean_shape()
    np.testing.assert_allclose(mean.numpy(), samples.mean(0), atol=1e-12, rtol=0)
    write_pts(root / "afw" / "afw_0.pts", real_shape(0) + 1000)  # a face whose box lies outside its image
    with pytest.raises(DatasetError, match="lies outside"):
        W300DataModule(str(root), **W300).mean_shape()
    with pytest.warns(UserWarning, match="without 1 unusable face"):
        skipped = W300DataModule(str(root), on_error="skip", **W300).mean_shape()
    assert skipped.shape == (68, 2) and torch.isfinite(skipped).all()
