"""Sweep configs: each get_config(arg) returns a training config plus a `sweep` block of named points."""
