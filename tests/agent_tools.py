"""Python tools for the agent tests (imported by module path, as a user's are)."""

from __future__ import annotations


def add_numbers(a: int, b: int) -> int:
    """Add two whole numbers.

    The second paragraph is not part of the description."""
    return a + b


def lookup(key: str, default: str | None = None) -> dict:
    """Look a key up."""
    if key == "boom":
        raise KeyError(key)
    return {"key": key, "value": default}


TOOLS = [add_numbers, lookup]
