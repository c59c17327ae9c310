"""Integrations (pytest plugin)."""
