"""Pretrained peers: published models that run without training here, wrapped as evaluation-only LandmarkModules so
they are rows on the leaderboards of their layout (their protocol stated in every record)."""
