"""Modelplane runtime: pull, verify, load and serve one model."""

__version__ = "0.1.0"
