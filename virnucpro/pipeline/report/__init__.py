"""The HTML reports: ``report.html`` of a run (:func:`render_report`); the page and the plots are
shared with the night report (:mod:`virnucpro.orchestration.night_report`)."""

from virnucpro.pipeline.report.run_report import render_report

__all__ = ["render_report"]
