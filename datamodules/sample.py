"""A stratified sample of a test set: up to N faces of every subset, for metric gates in CI (README "Gating CI on
metrics").

Why a stratified sample and not the first N faces: a CI job can afford a few faces per subset, and a regression
that only shows on profile or occluded faces must still move a number; the first faces of a list can miss a small
subset entirely. Why a hash and not a random generator: the faces must be the same whatever the order in which a
source lists them, the number of loader workers or of DDP processes (every process computes the sample on its own,
at ``setup``), and across machines and versions of numpy. Each face gets the key ``sha256("<seed>:<image id>")``;
every subset (``full``, all faces, then each of the test set's named subsets) contributes its N faces of smallest
key (ties, impossible in practice, by image id), and the sample is their union: at most N x (1 + subsets) faces, a
face drawn for two subsets counted once.

A sample is stated by what chose it and what it holds (:func:`describe_sample`): ``per_subset``, ``seed``, the
number of faces and the digest of their ids. The digest is ``leaderboard.store.image_set``'s, so a record of a
sampled evaluation carries the sample's digest as its image set (unless faces failed to load) and the CI gate can
refuse records of different samples by comparing the two statements.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from leaderboard.store import image_set


def sample_key(seed: int, image_id: str) -> bytes:
    """The sort key of a face in the sample of ``seed``: a hash of the seed and the image id alone, so it does not
    depend on where the face is in its list, nor on which process or worker asks."""
    return hashlib.sha256(f"{int(seed)}:{image_id}".encode()).digest()


def stratified_sample(image_ids: Sequence[str], tags: Sequence[Iterable[str]], subsets: Sequence[str],
                      per_subset: int, seed: int = 0) -> list[int]:
    """Positions (ascending) of the union of up to ``per_subset`` faces of every subset: all faces (``full``) and
    each name of ``subsets`` (tags not among them are ignored), the faces of smallest :func:`sample_key`.

    Args:
        image_ids: one unique id per face.
        tags: the subset tags of each face (``("pose", "occlusion")``, ``()``).
        subsets: the test set's subset names.
        per_subset: N >= 1.
        seed: chooses another sample of the same size.
    """
    if per_subset < 1:
        raise ValueError(f"a sample takes at least one face per subset, got per_subset={per_subset}")
    if len(tags) != len(image_ids):
        raise ValueError(f"{len(image_ids)} image ids but {len(tags)} tag lists")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("image ids repeat: a sample is chosen by image id, which must be unique")
    order = sorted(range(len(image_ids)), key=lambda i: (sample_key(seed, image_ids[i]), image_ids[i]))
    members = {name: [i for i in order if name in set(tags[i])] for name in subsets}
    chosen = set(order[:per_subset])
    for faces in members.values():
        chosen.update(faces[:per_subset])
    return sorted(chosen)


def describe_sample(per_subset: int, seed: int, image_ids: Iterable[str]) -> dict[str, Any]:
    """What a record says about its sample: ``{"per_subset", "seed", "n_images", "digest"}``, the digest that of
    the chosen ids (``leaderboard.store.image_set``)."""
    held = image_set({"image_id": [str(i) for i in image_ids]})
    return {"per_subset": int(per_subset), "seed": int(seed), "n_images": held["n_images"], "digest": held["digest"]}


__all__ = ["describe_sample", "sample_key", "stratified_sample"]
