"""Evaluation records, result tables and plots."""
