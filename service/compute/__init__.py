"""A compute process: torch, the models, and each request from bytes to bytes (pipeline.py)."""
