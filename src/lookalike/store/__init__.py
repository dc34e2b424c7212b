"""Catalog backends. The embedded SQLite catalog is the default and the source of truth."""
