"""Modelplane runtime: pull, verify, load and serve one model."""
