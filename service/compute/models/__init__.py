"""Pretrained models: the families served (families.py), loading (registry.py), tokenizing, and the
models' own forward pass with the service's attention (forward.py)."""
