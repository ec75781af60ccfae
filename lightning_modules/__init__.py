"""LightningModules: one paper per file, shared blocks in components/."""
