"""What a user writes down: prior strings and model specs.

* :mod:`bayesfuse.specs.priors` — Stan-style prior strings (``"halfnormal(1)"``), parsed
  into distributions, and data-scaled defaults;
* :mod:`bayesfuse.specs.models` — model specs (``models/*.toml``): family, options, priors
  and sampler settings, loaded by shipped name or path.
"""
