"""Moved to :mod:`storagecarbon.plan.cli`; this name stays so that existing imports keep working."""

from .plan.cli import COLUMN_LEGEND, hw_label, register, render_compare, render_plan  # noqa: F401
