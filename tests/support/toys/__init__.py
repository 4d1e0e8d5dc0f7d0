"""Toy extensions, each in one file, used by tests/test_extensions.py and shown in docs/EXTENDING.md."""
