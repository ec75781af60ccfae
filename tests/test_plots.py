"""CED plots are readable at 1:1 in the HTML pages: 560 px wide, text of at least 10 pt at 100 dpi, and a legend
below the axes that covers no curve, whatever the number of methods."""

import numpy as np
import pytest
from PIL import Image

from landmarks.metrics import auc
from leaderboard.plots import DPI, WIDTH_PX, ced_figure, plot_ced


@pytest.mark.parametrize("methods", [1, 3, 8])
def test_legend_sits_below_the_axes_and_text_is_large(methods, tmp_path):
    rng = np.random.default_rng(0)
    curves = {f"method {i} with a long descriptive name": rng.gamma(2, 0.01 + 0.004 * i, 200) for i in range(methods)}
    fig = ced_figure(curves, 0.1, title="CED")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.axes[0].get_window_extent(renderer)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert legend.y1 < axes.y0  # entirely under the axes: it covers no curve
    assert legend.y0 >= 0 and legend.x0 >= 0 and legend.x1 <= fig.bbox.width  # and inside the image
    texts = fig.axes[0].get_legend().get_texts()
    assert all(t.get_fontsize() >= 10 for t in texts)
    expected = [f"AUC@0.1 = {float(auc(v, 0.1)):.4f}" for v in curves.values()]
    assert all(e in t.get_text() for e, t in zip(expected, texts, strict=True))
    path = plot_ced(curves, tmp_path / "ced.png", 0.1)
    width, height = Image.open(path).size
    assert width == WIDTH_PX and DPI == 100  # the page shows figures 560 px wide: seen at 1:1
    assert height > 300
