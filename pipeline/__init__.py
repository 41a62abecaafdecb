"""Batch text-to-audiobook: a book in, tagged chapter audio out."""

__version__ = "0.1.0"
