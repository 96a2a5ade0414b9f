"""Pydantic models of modelyard's wire formats and of its config file.

Nothing here imports a web framework or a model backend.
"""
