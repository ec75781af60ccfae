"""Evaluation protocols in words: the one sentence every table (leaderboards, paper tables, the demo) uses to say
how its numbers were obtained, so they never disagree."""

from __future__ import annotations

from typing import Any

from landmarks.metrics import AUC_STEP


def protocol_words(protocol: dict[str, Any]) -> str:
    """``layout 300w_68, crop box landmarks x 1.25, input 256 px, flip test False[, annotation {...}]``."""
    crop = protocol.get("crop") or {}
    text = (f"layout {protocol.get('layout')}, crop box {crop.get('box_source')} x {crop.get('scale')}, input "
            f"{protocol.get('input_size')} px, flip test {protocol.get('flip_test')}")
    if protocol.get("annotation"):
        text += f", annotation {protocol.get('annotation')}"
    return text


def metric_words() -> str:
    """How NME, FR and AUC are defined (DESIGN.md, "Metrics")."""
    return (f"NME = mean over images of (mean point-to-point error / normaliser), in %; FR@t = % of images with "
            f"NME > t; AUC@t = area under the CED curve over [0, t] divided by t (a fraction), trapezoid rule on a "
            f"{AUC_STEP:g} grid")
