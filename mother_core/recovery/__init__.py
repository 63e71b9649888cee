"""Recover the Model Graph (a forest of directed trees) from weight statistics."""
