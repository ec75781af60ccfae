"""Face-alignment toolkit: layouts, heatmaps, losses, metrics, geometry (torch / numpy only)."""
