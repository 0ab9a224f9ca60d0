"""Data in and out of bayesfuse: the estimates container and the files it is read from.

* :mod:`bayesfuse.data.estimates` — :class:`TaskEstimates`, the validated container;
* :mod:`bayesfuse.data.columns` — task ids and standard errors as reported (se, CI, p-value);
* :mod:`bayesfuse.data.csv` — estimates CSV files;
* :mod:`bayesfuse.data.summary` — site summary JSON files (schema, validation, read, write);
* :mod:`bayesfuse.data.read` — :func:`read_estimates`, dispatching by file kind;
* :mod:`bayesfuse.data.datasets` — example data sets (``bf.datasets``).
"""

from bayesfuse.data.estimates import TaskEstimates
from bayesfuse.data.read import read_estimates

__all__ = ["TaskEstimates", "read_estimates"]
