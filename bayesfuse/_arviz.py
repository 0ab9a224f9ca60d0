"""ArviZ, imported for bayesfuse without its once-a-day notice about its 1.0 refactor.

bayesfuse pins ``arviz < 1``, so the notice (a ``FutureWarning`` on import) says nothing
to its users. The filter is scoped to this import: the process's warning filters are left
as they were.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    import arviz as az

__all__ = ["az"]
