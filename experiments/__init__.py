"""Experiment configs and the LightningCLI entry point."""

import os

# wandb logs offline unless the user asks for online logging (WANDB_MODE=online).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
