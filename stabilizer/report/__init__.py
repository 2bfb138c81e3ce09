"""Rendering a search: report folders, HTML, summary data and plots.

`write_report` writes ``best.yaml``, ``trials.csv``, ``report.html`` and ``summary.json``
(`_html.py`); `plot_result` draws the plots (`_plots.py`), which
`StabilityResult.plot()` shows inline in a notebook.
"""

from stabilizer.report._html import html_report, summary_dict, write_report
from stabilizer.report._plots import (
    MIN_TRIALS_FOR_IMPORTANCE,
    PLOTS,
    compact_figure,
    figure,
    parameter_importance,
    plot_result,
    png,
)

__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCE",
    "PLOTS",
    "compact_figure",
    "figure",
    "png",
    "html_report",
    "parameter_importance",
    "plot_result",
    "summary_dict",
    "write_report",
]
