"""Figures, tables and HTML pages made from a fit or a sensitivity analysis.

* :mod:`bayesfuse.reporting.figures` — ``bf.plot``: one module per figure;
* :mod:`bayesfuse.reporting.tables` — ``bf.tables``: result tables as DataFrame, CSV,
  Markdown or LaTeX;
* :mod:`bayesfuse.reporting.html` — the one HTML writer (style sheet, Content-Security-
  Policy, inline figures) both pages use;
* :mod:`bayesfuse.reporting.report` — ``bayesfuse report``: the fit's report page;
* :mod:`bayesfuse.reporting.sensitivity_page` — ``bayesfuse sensitivity``: its page;
* :mod:`bayesfuse.reporting.layout` — task orderings and graph layouts (pure arrays).

Figures take any object with the attributes they read (a fit, or a fit loaded from a
file); no module here imports the result class.
"""
