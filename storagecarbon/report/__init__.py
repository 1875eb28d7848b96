"""Reporters: each reads one result (the report dict built from an Attribution) and renders it."""
