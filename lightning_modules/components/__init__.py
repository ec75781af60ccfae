"""Network blocks shared by several papers."""
