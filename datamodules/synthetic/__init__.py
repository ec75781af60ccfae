"""The embedded synthetic face dataset (see ``source``): a 3-D shape model (``face_model``, with its data in
``data/``), a renderer (``face_render``, painting with ``face_paint``) and the source and datamodule that serve
its faces like any benchmark's. Configs name ``datamodules.synthetic.SyntheticFaceDataModule``."""

from datamodules.synthetic.face_render import ATTRIBUTES, SyntheticFace, render_face
from datamodules.synthetic.source import (
    JITTERED_BOX,
    PWC_PARTS,
    SPLITS,
    SUBSET_SCHEMES,
    SYNTHETIC_CROP,
    SyntheticFaceDataModule,
    SyntheticFaceSource,
)

__all__ = [
    "ATTRIBUTES", "JITTERED_BOX", "PWC_PARTS", "SPLITS", "SUBSET_SCHEMES", "SYNTHETIC_CROP", "SyntheticFace",
    "SyntheticFaceDataModule", "SyntheticFaceSource", "render_face",
]
