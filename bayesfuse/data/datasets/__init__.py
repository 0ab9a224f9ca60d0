"""Embedded example data.

* :func:`load_star` — Tennessee STAR class-size experiment, individual level (11,598
  students, 79 schools; AER::STAR). Variables are documented in
  ``scripts/build_star_data.py``, which rebuilds the embedded file from its public source.
* :func:`star_analysis_frame` — the per-grade analysis table the demo uses.
* :func:`load_eight_schools` — Rubin's (1981) eight schools, summary level.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from bayesfuse._validation import check_choice
from bayesfuse.errors import DataError

__all__ = [
    "load_star",
    "star_analysis_frame",
    "star_vector_frame",
    "load_eight_schools",
    "STAR_COVARIATES",
]

GRADES = ("k", "1", "2", "3")
#: student covariates of :func:`star_analysis_frame` (all measured before assignment)
STAR_COVARIATES = ["girl", "minority", "free_lunch", "free_lunch_missing", "age", "age_missing"]


def load_star() -> pd.DataFrame:
    """Tennessee STAR, one row per student (AER::STAR, 11,598 rows, 48 columns).

    Returns
    -------
    DataFrame
        ``student`` id, ``gender``, ``ethnicity``, ``birth`` ("1979 Q3"), and per grade g in
        k, 1, 2, 3: ``star{g}`` (class type: regular, small, regular+aide), ``read{g}``,
        ``math{g}`` (scaled scores), ``lunch{g}``, ``school{g}``, ``degree{g}``,
        ``ladder{g}``, ``experience{g}``, ``tethnicity{g}``, ``system{g}``, ``schoolid{g}``.
        Strings are categoricals; counts and ids are nullable integers.

    References
    ----------
    Word, E. et al. (1990). Student/Teacher Achievement Ratio (STAR), Tennessee's K-3 class
    size study. Krueger, A. B. (1999). Experimental estimates of education production
    functions. QJE 114(2), 497-532. Kleiber, C. & Zeileis, A. (2008). Applied Econometrics
    with R (package AER, data STAR).

    Examples
    --------
    >>> import bayesfuse as bf
    >>> star = bf.datasets.load_star()
    >>> star.shape
    (11598, 48)
    """
    source = resources.files("bayesfuse.data.datasets") / "data" / "star.csv.gz"
    with resources.as_file(source) as path:
        frame = pd.read_csv(path, compression="gzip")
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            frame[column] = values.astype("category")
        elif pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")
        elif pd.api.types.is_integer_dtype(values):
            frame[column] = values.astype("Int64")
    return frame


def _age_on_sept_1985(birth: pd.Series) -> pd.Series:
    """Age in years on 1985-09-01 (start of kindergarten) from "1979 Q3" (mid-quarter)."""
    text = birth.astype("string")
    year = pd.to_numeric(text.str.slice(0, 4), errors="coerce")
    quarter = pd.to_numeric(text.str.extract(r"Q(\d)")[0], errors="coerce")
    born = year + (quarter - 1) * 0.25 + 0.125
    return 1985 + 8 / 12 - born


def star_analysis_frame(grade: str = "k", outcome: str = "score") -> pd.DataFrame:
    """STAR students of one grade in small or regular classes: the demo's analysis table.

    Parameters
    ----------
    grade : {"k", "1", "2", "3"}
    outcome : str
        Name of the standardised outcome column (default ``"score"``).

    Returns
    -------
    DataFrame
        One row per student with non-missing school, class type and both scores:
        ``school`` (id as string), ``treatment`` (1 small class, 0 regular; regular+aide
        classes are left out), ``read``, ``math``, ``score`` = (read + math) standardised
        by the mean and sd of the regular-class students of that grade (Krueger's scaling
        by the control group), and student covariates ``girl``, ``minority`` (not
        Caucasian), ``free_lunch``, ``free_lunch_missing``, ``age`` (years on 1985-09-01,
        median-imputed), ``age_missing``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> star = bf.datasets.star_analysis_frame("k")     # kindergarten, one row per pupil
    >>> est = bf.estimate_tasks(star, task="school", outcome="score", treatment="treatment",
    ...                         covariates=bf.datasets.STAR_COVARIATES)   # doctest: +SKIP
    """
    grade = str(grade).lower()
    check_choice(grade, "grade", GRADES)
    star = load_star()
    kind = star[f"star{grade}"].astype("string")
    keep = kind.isin(["small", "regular"]) & star[f"schoolid{grade}"].notna()
    keep &= star[f"read{grade}"].notna() & star[f"math{grade}"].notna()
    rows = star[keep.fillna(False).to_numpy()]
    treatment = (rows[f"star{grade}"].astype("string") == "small").astype(int).to_numpy()
    total = (rows[f"read{grade}"].astype(float) + rows[f"math{grade}"].astype(float)).to_numpy()
    control = total[treatment == 0]
    lunch = rows[f"lunch{grade}"].astype("string")
    age = _age_on_sept_1985(rows["birth"]).to_numpy(dtype=float)
    age_missing = np.isnan(age)
    frame = pd.DataFrame({
        "school": rows[f"schoolid{grade}"].astype(int).astype(str).to_numpy(),
        "treatment": treatment,
        "read": rows[f"read{grade}"].astype(float).to_numpy(),
        "math": rows[f"math{grade}"].astype(float).to_numpy(),
        outcome: (total - control.mean()) / control.std(ddof=1),
        "girl": (rows["gender"].astype("string") == "female").fillna(False).astype(int)
        .to_numpy(),
        "minority": (rows["ethnicity"].astype("string") != "cauc").fillna(False).astype(int)
        .to_numpy(),
        "free_lunch": (lunch == "free").fillna(False).astype(int).to_numpy(),
        "free_lunch_missing": lunch.isna().astype(int).to_numpy(),
        "age": np.where(age_missing, np.nanmedian(age), age),
        "age_missing": age_missing.astype(int),
    })
    return frame.reset_index(drop=True)


def star_vector_frame(grades: tuple[str, ...] | list[str] = ("k",)) -> pd.DataFrame:
    """STAR with one outcome per (grade, subject): for vector θ per school.

    Students are those assigned in kindergarten to a small or regular class (the
    randomised assignment; intention-to-treat for later grades) with reading and math
    scores in every grade of ``grades``. Schools are kindergarten schools.

    Parameters
    ----------
    grades : sequence of {"k", "1", "2", "3"}

    Returns
    -------
    DataFrame
        ``school``, ``treatment`` (1 small class in kindergarten), one standardised score
        per grade and subject named ``read_<g>`` and ``math_<g>`` (scaled by the mean and
        sd of the regular-class students), and the covariates of
        :func:`star_analysis_frame` (measured at kindergarten entry). The outcome names
        are in ``frame.attrs["outcomes"]``.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> frame = bf.datasets.star_vector_frame(("k",))   # reading and maths: vector θ
    >>> est = bf.estimate_tasks(frame, task="school", outcome=["read_k", "math_k"],
    ...                         treatment="treatment")  # doctest: +SKIP
    """
    grades = [str(g).lower() for g in grades]
    bad = [g for g in grades if g not in GRADES]
    if bad or not grades:
        raise DataError(f"grades must be a non-empty list from {', '.join(GRADES)}; got "
                        f"{list(grades)}.")
    star = load_star()
    kind = star["stark"].astype("string")
    scores = [f"{subject}{g}" for g in grades for subject in ("read", "math")]
    keep = kind.isin(["small", "regular"]) & star["schoolidk"].notna()
    for column in scores:
        keep &= star[column].notna()
    rows = star[keep.fillna(False).to_numpy()]
    treatment = (rows["stark"].astype("string") == "small").astype(int).to_numpy()
    lunch = rows["lunchk"].astype("string")
    age = _age_on_sept_1985(rows["birth"]).to_numpy(dtype=float)
    age_missing = np.isnan(age)
    frame = pd.DataFrame({
        "school": rows["schoolidk"].astype(int).astype(str).to_numpy(),
        "treatment": treatment,
    })
    outcomes = []
    for g in grades:
        for subject in ("read", "math"):
            values = rows[f"{subject}{g}"].astype(float).to_numpy()
            control = values[treatment == 0]
            name = f"{subject}_{g}"
            frame[name] = (values - control.mean()) / control.std(ddof=1)
            outcomes.append(name)
    frame["girl"] = (rows["gender"].astype("string") == "female").fillna(False).astype(int) \
        .to_numpy()
    frame["minority"] = (rows["ethnicity"].astype("string") != "cauc").fillna(False) \
        .astype(int).to_numpy()
    frame["free_lunch"] = (lunch == "free").fillna(False).astype(int).to_numpy()
    frame["free_lunch_missing"] = lunch.isna().astype(int).to_numpy()
    frame["age"] = np.where(age_missing, np.nanmedian(age), age)
    frame["age_missing"] = age_missing.astype(int)
    frame.attrs["outcomes"] = outcomes
    return frame.reset_index(drop=True)


def load_eight_schools() -> pd.DataFrame:
    """Rubin's (1981) eight schools: SAT coaching effects, summary level.

    Returns
    -------
    DataFrame
        Columns ``task`` ("A".."H"), ``estimate`` (effect, SAT points), ``se``.

    References
    ----------
    Rubin, D. B. (1981). Estimation in parallel randomized experiments. JEBS 6(4), 377-401.
    Gelman, A. et al. (2013). Bayesian Data Analysis, 3rd ed., §5.5.

    Examples
    --------
    >>> import bayesfuse as bf
    >>> est = bf.TaskEstimates.from_frame(bf.datasets.load_eight_schools())
    >>> est.n_tasks
    8
    """
    return pd.DataFrame({
        "task": list("ABCDEFGH"),
        "estimate": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
        "se": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
    })
