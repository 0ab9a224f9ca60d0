"""Model specifications: the shipped ``models/*.toml`` files and user spec files.

A spec names a family, its options, prior overrides and sampler settings::

    family = "exchangeable"
    [options]          # family options (any top-level key other than the tables below
    robust = false     # is read as an option too, e.g. ``max_clusters = 10``)
    [priors]
    tau = "halfnormal(1)"
    [sampler]
    chains = 4
    draws = 1000
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bayesfuse.errors import SpecError

__all__ = ["SamplerConfig", "ModelSpec", "load_spec", "shipped_models", "models_dir"]


@dataclass(frozen=True)
class SamplerConfig:
    """NUTS settings.

    ``chain_method`` is ``"auto"`` (parallel over devices when there are enough, else
    vectorised), ``"parallel"``, ``"vectorized"`` or ``"sequential"``.
    """

    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    target_accept: float = 0.9
    max_tree_depth: int = 10
    chain_method: str = "auto"
    thinning: int = 1

    def validated(self) -> SamplerConfig:
        ints = {"chains": 1, "draws": 1, "warmup": 0, "max_tree_depth": 1, "thinning": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SpecError(f"sampler '{name}' must be an integer >= {low}; got {value!r}.")
        if not isinstance(self.target_accept, int | float) or not 0 < self.target_accept < 1:
            raise SpecError(
                f"sampler 'target_accept' must be in (0, 1); got {self.target_accept!r}."
            )
        methods = ("auto", "parallel", "vectorized", "sequential")
        if self.chain_method not in methods:
            raise SpecError(
                f"sampler 'chain_method' must be one of {', '.join(methods)}; "
                f"got {self.chain_method!r}."
            )
        return replace(self, target_accept=float(self.target_accept))


@dataclass(frozen=True)
class ModelSpec:
    """A family name with its options, prior overrides and sampler settings."""

    family: str
    options: dict[str, Any] = field(default_factory=dict)
    priors: dict[str, str] = field(default_factory=dict)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "options": dict(self.options),
            "priors": dict(self.priors),
            "sampler": asdict(self.sampler),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> ModelSpec:
        data = dict(data)
        family = data.pop("family", None)
        if not isinstance(family, str) or not family:
            raise SpecError(f"{source or 'model spec'}: needs a 'family' string, e.g. "
                            "family = \"exchangeable\".")
        priors = data.pop("priors", {}) or {}
        sampler = data.pop("sampler", {}) or {}
        options = dict(data.pop("options", {}) or {})
        data.pop("source", None)
        data.pop("description", None)
        options.update(data)  # remaining top-level keys are family options
        if not isinstance(priors, Mapping) or not all(
            isinstance(v, str) for v in priors.values()
        ):
            raise SpecError(f"{source or 'model spec'}: [priors] must map names to strings.")
        if not isinstance(sampler, Mapping):
            raise SpecError(f"{source or 'model spec'}: [sampler] must be a table.")
        valid = set(SamplerConfig.__dataclass_fields__)
        unknown = set(sampler) - valid
        if unknown:
            raise SpecError(
                f"{source or 'model spec'}: unknown sampler setting(s) {sorted(unknown)}; "
                f"valid: {', '.join(sorted(valid))}."
            )
        return cls(
            family=family,
            options=options,
            priors={str(k): str(v) for k, v in priors.items()},
            sampler=SamplerConfig(**sampler).validated(),
            source=source,
        )


def models_dir() -> Path:
    """Folder of the shipped specs (``models/`` in a checkout, ``bayesfuse/_models`` in a
    wheel)."""
    here = Path(__file__).resolve().parents[1]  # the package folder
    for candidate in (here / "_models", here.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise SpecError("The shipped model specs (models/*.toml) are missing from this install.")


def shipped_models() -> list[str]:
    """Names of the shipped model specs."""
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_spec(model: str | os.PathLike[str] | Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """Load a model spec by shipped name, path to a TOML file, or mapping.

    Parameters
    ----------
    model : str, path, mapping or ModelSpec
        ``"exchangeable"`` (a shipped name, see :func:`shipped_models`), ``"my/spec.toml"``,
        or a dict with the TOML's structure.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, Mapping):
        return ModelSpec.from_dict(model, source="<dict>")
    text = os.fspath(model)
    path = Path(text)
    if path.suffix.lower() == ".toml" or os.sep in text or "/" in text:
        if not path.is_file():
            raise SpecError(f"Model spec file not found: {path}")
    else:
        path = models_dir() / f"{text}.toml"
        if not path.is_file():
            raise SpecError(
                f"Unknown model '{text}'. Shipped models: {', '.join(shipped_models())}; "
                "or give the path of a .toml spec."
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}).") from None
    return ModelSpec.from_dict(data, source=str(path))
