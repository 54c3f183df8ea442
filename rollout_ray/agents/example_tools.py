"""Tools for configs/agent-python.yaml: plain functions, schemas from their type hints.

Copy this module and write your own; `agent: {kind: python, tools: my_module:TOOLS}`.
"""

from __future__ import annotations

from fractions import Fraction


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


def divide(a: float, b: float) -> str:
    """Divide a by b, exactly (as a fraction when it is not whole)."""
    result = Fraction(str(a)) / Fraction(str(b))  # ZeroDivisionError is the tool's error
    return str(result)


TOOLS = [add, multiply, divide]
