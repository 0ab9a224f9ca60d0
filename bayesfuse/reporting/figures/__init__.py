"""Figures of a fit (``bf.plot``): forest, shrinkage, similarity, task graph, prior vs
posterior, and the ArviZ sampler diagnostics.

One module per figure: :mod:`.forest`, :mod:`.shrinkage`, :mod:`.similarity` (heatmap and
its task order), :mod:`.task_graph`, :mod:`.prior_posterior`, :mod:`.diagnostics` (trace,
energy, pair); the helpers they share are in :mod:`._common`. A figure takes a fit
(``FusionResult``) or any object with the attributes it reads; none imports the result
class.

Every function draws with Matplotlib's object-oriented API, accepts ``ax=`` (or ``axes=``)
to draw into existing axes, and returns what it drew on: one ``Axes``, or an array of
``Axes`` for several panels. Without ``ax`` a new figure is made with ``pyplot``; nothing
is shown, so the functions are safe under the non-interactive Agg backend.

Examples
--------
>>> import bayesfuse as bf
>>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
>>> fit = bf.fuse(est, method="exact", seed=0)                 # doctest: +SKIP
>>> ax = bf.plot.forest(fit, ci_prob=0.9)                      # doctest: +SKIP
>>> ax.figure.savefig("forest.png", dpi=200)                   # doctest: +SKIP
"""

from __future__ import annotations

# the figure colours and interval kinds stay module attributes, as before the split
from bayesfuse.reporting.figures._common import EDGE as EDGE
from bayesfuse.reporting.figures._common import FUSED as FUSED
from bayesfuse.reporting.figures._common import INTERVALS as INTERVALS
from bayesfuse.reporting.figures._common import POOLED as POOLED
from bayesfuse.reporting.figures._common import STAGE1 as STAGE1
from bayesfuse.reporting.figures._common import offscreen
from bayesfuse.reporting.figures.diagnostics import energy, pair, trace
from bayesfuse.reporting.figures.forest import forest
from bayesfuse.reporting.figures.prior_posterior import prior_posterior
from bayesfuse.reporting.figures.shrinkage import shrinkage
from bayesfuse.reporting.figures.similarity import similarity, task_order
from bayesfuse.reporting.figures.task_graph import task_graph

__all__ = [
    "forest",
    "shrinkage",
    "similarity",
    "task_graph",
    "prior_posterior",
    "trace",
    "energy",
    "pair",
    "task_order",
    "offscreen",
]
