"""Experiment configs: one `get_config(arg)` per file (see each file's docstring)."""
