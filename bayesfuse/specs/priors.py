"""Prior strings a person can read and type, parameterised as in Stan.

``"normal(0, 10)"`` (location, standard deviation), ``"halfnormal(1)"`` (scale),
``"halfcauchy(5)"``, ``"cauchy(0, 2.5)"``, ``"student_t(3, 0, 2.5)"`` (ν, location, scale),
``"halfstudent_t(3, 2.5)"``, ``"lognormal(0, 1)"``, ``"gamma(2, 0.1)"`` (shape, rate),
``"inv_gamma(2, 1)"`` (shape, scale), ``"exponential(1)"`` (rate), ``"beta(2, 2)"``,
``"uniform(0, 1)"``, ``"lkj(2)"`` (LKJ concentration η for correlation matrices).

A :class:`Prior` is parsed once, validated (argument count, positive scales, support that
fits the parameter) and turned into a NumPyro distribution (or a PyMC one by the PyMC
backend) from one table, :data:`PRIOR_FAMILIES`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayesfuse.errors import PriorError

__all__ = ["Prior", "parse_prior", "PRIOR_FAMILIES", "resolve_priors", "format_number"]

_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class _FamilyInfo:
    arg_names: tuple[str, ...]
    positive_args: tuple[int, ...]  # indices of arguments that must be > 0
    support: str  # "real", "positive", "unit", "correlation"


PRIOR_FAMILIES: dict[str, _FamilyInfo] = {
    "normal": _FamilyInfo(("loc", "scale"), (1,), "real"),
    "cauchy": _FamilyInfo(("loc", "scale"), (1,), "real"),
    "student_t": _FamilyInfo(("df", "loc", "scale"), (0, 2), "real"),
    "halfnormal": _FamilyInfo(("scale",), (0,), "positive"),
    "halfcauchy": _FamilyInfo(("scale",), (0,), "positive"),
    "halfstudent_t": _FamilyInfo(("df", "scale"), (0, 1), "positive"),
    "lognormal": _FamilyInfo(("loc", "scale"), (1,), "positive"),
    "gamma": _FamilyInfo(("shape", "rate"), (0, 1), "positive"),
    "inv_gamma": _FamilyInfo(("shape", "scale"), (0, 1), "positive"),
    "exponential": _FamilyInfo(("rate",), (0,), "positive"),
    "beta": _FamilyInfo(("a", "b"), (0, 1), "unit"),
    "uniform": _FamilyInfo(("low", "high"), (), "bounded"),
    "lkj": _FamilyInfo(("eta",), (0,), "correlation"),
}
_ALIASES = {
    "half_normal": "halfnormal",
    "half_cauchy": "halfcauchy",
    "studentt": "student_t",
    "student": "student_t",
    "t": "student_t",
    "half_student_t": "halfstudent_t",
    "halft": "halfstudent_t",
    "invgamma": "inv_gamma",
    "inverse_gamma": "inv_gamma",
    "exp": "exponential",
    "lkj_corr": "lkj",
    "lkjcorr": "lkj",
}
_SUPPORTS_OK = {
    "real": {"real"},
    "positive": {"positive", "bounded"},
    "unit": {"unit", "bounded"},
    "correlation": {"correlation"},
}


def format_number(value: float) -> str:
    """Short, exact-enough text for a prior argument (4 significant digits)."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


@dataclass(frozen=True)
class Prior:
    """A parsed prior: a distribution family name and its numeric arguments."""

    family: str
    args: tuple[float, ...]

    @property
    def support(self) -> str:
        info = PRIOR_FAMILIES[self.family]
        if info.support == "bounded":
            low, high = self.args
            if low >= 0 and high <= 1:
                return "unit"
            return "positive" if low >= 0 else "real"
        return info.support

    def __str__(self) -> str:
        return f"{self.family}({', '.join(format_number(a) for a in self.args)})"

    def numpyro(self, args: Sequence[Any] | None = None):
        """The NumPyro distribution; ``args`` may replace the arguments by (batched) arrays."""
        import numpyro.distributions as dist

        a = self.args if args is None else tuple(args)
        f = self.family
        if f == "normal":
            return dist.Normal(a[0], a[1])
        if f == "cauchy":
            return dist.Cauchy(a[0], a[1])
        if f == "student_t":
            return dist.StudentT(a[0], a[1], a[2])
        if f == "halfnormal":
            return dist.HalfNormal(a[0])
        if f == "halfcauchy":
            return dist.HalfCauchy(a[0])
        if f == "halfstudent_t":
            return dist.FoldedDistribution(dist.StudentT(a[0], 0.0, a[1]))
        if f == "lognormal":
            return dist.LogNormal(a[0], a[1])
        if f == "gamma":
            return dist.Gamma(a[0], a[1])
        if f == "inv_gamma":
            return dist.InverseGamma(a[0], a[1])
        if f == "exponential":
            return dist.Exponential(a[0])
        if f == "beta":
            return dist.Beta(a[0], a[1])
        if f == "uniform":
            return dist.Uniform(a[0], a[1])
        raise PriorError(f"{self} has no elementwise NumPyro form (use it for correlations).")

    def pymc(self, name: str, args: Sequence[Any] | None = None, **kwargs: Any):
        """The PyMC random variable ``name`` (call inside a ``pm.Model`` context)."""
        import pymc as pm

        a = self.args if args is None else tuple(args)
        f = self.family
        table = {
            "normal": lambda: pm.Normal(name, mu=a[0], sigma=a[1], **kwargs),
            "cauchy": lambda: pm.Cauchy(name, alpha=a[0], beta=a[1], **kwargs),
            "student_t": lambda: pm.StudentT(name, nu=a[0], mu=a[1], sigma=a[2], **kwargs),
            "halfnormal": lambda: pm.HalfNormal(name, sigma=a[0], **kwargs),
            "halfcauchy": lambda: pm.HalfCauchy(name, beta=a[0], **kwargs),
            "halfstudent_t": lambda: pm.HalfStudentT(name, nu=a[0], sigma=a[1], **kwargs),
            "lognormal": lambda: pm.LogNormal(name, mu=a[0], sigma=a[1], **kwargs),
            "gamma": lambda: pm.Gamma(name, alpha=a[0], beta=a[1], **kwargs),
            "inv_gamma": lambda: pm.InverseGamma(name, alpha=a[0], beta=a[1], **kwargs),
            "exponential": lambda: pm.Exponential(name, lam=a[0], **kwargs),
            "beta": lambda: pm.Beta(name, alpha=a[0], beta=a[1], **kwargs),
            "uniform": lambda: pm.Uniform(name, lower=a[0], upper=a[1], **kwargs),
        }
        if f not in table:
            raise PriorError(f"{self} has no elementwise PyMC form.")
        return table[f]()

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` with numpy/scipy (used by checks and sensitivity)."""
        from scipy import stats

        a = self.args
        f = self.family
        x = np.asarray(x, dtype=float)
        table = {
            "normal": lambda: stats.norm.logpdf(x, a[0], a[1]),
            "cauchy": lambda: stats.cauchy.logpdf(x, a[0], a[1]),
            "student_t": lambda: stats.t.logpdf(x, a[0], a[1], a[2]),
            "halfnormal": lambda: stats.halfnorm.logpdf(x, 0, a[0]),
            "halfcauchy": lambda: stats.halfcauchy.logpdf(x, 0, a[0]),
            "halfstudent_t": lambda: np.log(2) + stats.t.logpdf(x, a[0], 0, a[1])
            + np.where(x >= 0, 0.0, -np.inf),
            "lognormal": lambda: stats.lognorm.logpdf(x, a[1], scale=math.exp(a[0])),
            "gamma": lambda: stats.gamma.logpdf(x, a[0], scale=1 / a[1]),
            "inv_gamma": lambda: stats.invgamma.logpdf(x, a[0], scale=a[1]),
            "exponential": lambda: stats.expon.logpdf(x, scale=1 / a[0]),
            "beta": lambda: stats.beta.logpdf(x, a[0], a[1]),
            "uniform": lambda: stats.uniform.logpdf(x, a[0], a[1] - a[0]),
        }
        if f not in table:
            raise PriorError(f"{self} has no elementwise density.")
        return table[f]()


def parse_prior(text: str | Prior, *, name: str = "prior") -> Prior:
    """Parse a prior string such as ``"halfnormal(2)"``.

    Parameters
    ----------
    text : str or Prior
        The prior, Stan-style parameterisation.
    name : str
        The parameter the prior is for, used in error messages.

    Raises
    ------
    PriorError
        On an unknown family, a wrong number of arguments, or an invalid argument.
    """
    if isinstance(text, Prior):
        return text
    if not isinstance(text, str):
        raise PriorError(f"Prior for '{name}' must be a string like 'normal(0, 10)'; got {text!r}.")
    match = _PATTERN.match(text)
    if not match:
        raise PriorError(
            f"Cannot read prior for '{name}': {text!r}. Write it as family(arguments), "
            "e.g. 'normal(0, 10)' or 'halfnormal(1)'."
        )
    family = match.group(1).lower()
    family = _ALIASES.get(family, family)
    if family not in PRIOR_FAMILIES:
        raise PriorError(
            f"Unknown prior family '{match.group(1)}' for '{name}'. Valid families: "
            f"{', '.join(PRIOR_FAMILIES)}."
        )
    info = PRIOR_FAMILIES[family]
    raw = [a.strip() for a in match.group(2).split(",")] if match.group(2).strip() else []
    if len(raw) != len(info.arg_names):
        raise PriorError(
            f"Prior '{text}' for '{name}': {family} takes {len(info.arg_names)} argument(s) "
            f"({', '.join(info.arg_names)}); got {len(raw)}."
        )
    try:
        args = tuple(float(a) for a in raw)
    except ValueError:
        raise PriorError(f"Prior '{text}' for '{name}': arguments must be numbers.") from None
    if not all(math.isfinite(a) for a in args):
        raise PriorError(f"Prior '{text}' for '{name}': arguments must be finite numbers.")
    for i in info.positive_args:
        if args[i] <= 0:
            raise PriorError(
                f"Prior '{text}' for '{name}': {info.arg_names[i]} must be > 0; got {raw[i]}."
            )
    if family == "uniform" and not args[0] < args[1]:
        raise PriorError(f"Prior '{text}' for '{name}': needs low < high.")
    return Prior(family, args)


def check_support(prior: Prior, support: str, name: str) -> None:
    """Raise if ``prior`` does not fit a parameter with the given support."""
    if prior.support not in _SUPPORTS_OK[support]:
        kinds = {
            "real": "a prior on the real line, e.g. normal(0, 10) or student_t(3, 0, 2.5)",
            "positive": "a prior on positive numbers, e.g. halfnormal(1), halfcauchy(5), "
            "gamma(2, 0.1), exponential(1)",
            "unit": "a prior on (0, 1), e.g. beta(2, 2) or uniform(0, 1)",
            "correlation": "an LKJ prior on correlation matrices, e.g. lkj(2)",
        }
        raise PriorError(f"'{name}' = {prior} does not fit: '{name}' needs {kinds[support]}.")


@dataclass(frozen=True)
class PriorBlock:
    """The declaration of one hyperparameter block of a family.

    ``elements`` are the labels of its entries (e.g. the parameter names for ``mu``), or
    ``None`` for a block with a single prior (a correlation matrix, a concentration).
    """

    name: str
    support: str
    elements: tuple[str, ...] | None = None


def resolve_priors(
    blocks: Sequence[PriorBlock],
    defaults: Mapping[str, str | Sequence[str]],
    user: Mapping[str, str] | None,
) -> dict[str, list[Prior]]:
    """Combine data-scaled defaults with user overrides into one prior per element.

    Parameters
    ----------
    blocks : sequence of PriorBlock
        What the family declares.
    defaults : mapping
        Block name -> prior string (for every element) or one string per element.
    user : mapping, optional
        Overrides: ``"tau"`` (every element) or ``"tau[math]"`` (one element).

    Returns
    -------
    dict
        Block name -> list of :class:`Prior`, one per element (length 1 for scalar blocks).
        All elements of a block share one distribution family.
    """
    user = dict(user or {})
    by_name = {b.name: b for b in blocks}
    valid = []
    for b in blocks:
        valid.append(b.name)
        valid += [f"{b.name}[{e}]" for e in (b.elements or ())]
    for key in user:
        base = key.split("[", 1)[0]
        if base not in by_name or (key != base and key not in valid):
            raise PriorError(
                f"Unknown prior name '{key}' for this model. Valid names: {', '.join(valid)}."
            )
    resolved: dict[str, list[Prior]] = {}
    for block in blocks:
        elements = block.elements or (None,)
        default = defaults[block.name]
        per_element = [default] * len(elements) if isinstance(default, str) else list(default)
        out = []
        for element, text in zip(elements, per_element, strict=True):
            label = block.name if element is None else f"{block.name}[{element}]"
            if element is not None and label in user:
                text = user[label]
            elif block.name in user:
                text = user[block.name]
            prior = parse_prior(text, name=label)
            check_support(prior, block.support, label)
            out.append(prior)
        families = {p.family for p in out}
        if len(families) > 1:
            raise PriorError(
                f"All entries of '{block.name}' must use one distribution family; got "
                f"{', '.join(sorted(families))}. Give the same family with different arguments."
            )
        resolved[block.name] = out
    return resolved


def stacked_args(priors: Sequence[Prior]) -> tuple[np.ndarray, ...]:
    """Arguments of element priors stacked into arrays of shape (n_elements,)."""
    return tuple(np.array([p.args[i] for p in priors]) for i in range(len(priors[0].args)))


def prior_arguments(resolved: Mapping[str, Sequence[Prior]]) -> dict[str, np.ndarray]:
    """The numeric arguments of resolved priors, one array per block.

    Returns ``{block: array of shape (n_elements, n_args)}``. A sampler passes these to the
    model as inputs (see :func:`with_arguments`) rather than as constants, so the compiled
    program does not depend on the prior's numbers: a refit with other data-scaled
    defaults, or a prior sweep, reuses it.
    """
    return {name: np.array([p.args for p in priors], dtype=float).reshape(len(priors), -1)
            for name, priors in resolved.items()}


def with_arguments(resolved: Mapping[str, Sequence[Prior]],
                   arguments: Mapping[str, Any]) -> dict[str, list[Prior]]:
    """Resolved priors whose arguments are replaced by ``arguments`` (e.g. traced arrays).

    ``arguments`` is what :func:`prior_arguments` returns, possibly as JAX arrays; the
    distribution families stay those of ``resolved``.
    """
    return {name: [Prior(p.family, tuple(arguments[name][i, j] for j in range(len(p.args))))
                   for i, p in enumerate(priors)]
            for name, priors in resolved.items()}


def prior_strings(resolved: Mapping[str, Sequence[Prior]],
                  blocks: Sequence[PriorBlock]) -> dict[str, str]:
    """Flat ``{"mu[read]": "normal(0, 5)", "tau": ...}`` view of resolved priors."""
    out: dict[str, str] = {}
    for block in blocks:
        priors = resolved[block.name]
        if block.elements is None or len(block.elements) == 1:
            out[block.name] = str(priors[0])
        else:
            for element, prior in zip(block.elements, priors, strict=True):
                out[f"{block.name}[{element}]"] = str(prior)
    return out
