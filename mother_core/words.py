"""The base of the engine's vocabularies (relations, edge statuses): enums whose members are words.

Examples
--------
>>> class Colour(Word):
...     RED = "red"
>>> f"{Colour.RED}", Colour.RED == "red", Colour("red") is Colour.RED
('red', True, True)
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Word"]


class Word(str, Enum):
    """A vocabulary word: the member's value is the word written everywhere (CLI, ``result.json``, the
    app); it compares and hashes as that string and prints as it (not as ``Class.MEMBER``)."""

    def __str__(self) -> str:
        return str(self.value)
