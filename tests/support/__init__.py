"""Shared test support: fixture plugins (loaded by tests/conftest.py) and helpers."""
