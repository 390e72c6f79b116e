"""How error messages show a value that was found: short, JSON-flavoured, never the whole of a large input."""

from typing import Any


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) < 30 else f"an integer of {len(text)} digits"
    return type(value).__name__
