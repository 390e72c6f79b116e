"""Pretrained models: loading (registry.py), tokenizing, and each family's forward pass (bert.py)."""
