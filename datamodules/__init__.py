"""Face-landmark datamodules: one shared base, datasets differ only in parsing."""

import os

# albumentations checks PyPI for updates at import time unless told not to (no network on most clusters).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
