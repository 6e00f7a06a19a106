"""Speedup/accuracy reports across builds, runtimes, precisions and devices (table, CSV, JSON, Markdown, HTML)."""

from device_bench.report.render import FORMATS, render, write_reports
from device_bench.report.table import COLUMNS, Budget, load_report_table

__all__ = ["COLUMNS", "FORMATS", "Budget", "load_report_table", "render", "write_reports"]
