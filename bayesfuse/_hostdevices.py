"""Expose several CPU devices to JAX so that MCMC chains can run in parallel.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so this runs on
``import bayesfuse`` (before bayesfuse imports JAX). It does nothing when JAX was already
imported, when the user already set the flag, or when ``BAYESFUSE_HOST_DEVICES=0``. The
count is the number of CPU cores (at most 4, the default number of chains), which is what
``numpyro.set_host_device_count`` would set.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_force_host_platform_device_count"


def _configure() -> None:
    if "jax" in sys.modules:
        return
    requested = os.environ.get("BAYESFUSE_HOST_DEVICES")
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return
    count = int(requested) if requested and requested.isdigit() else min(os.cpu_count() or 1, 4)
    if count <= 1:
        return
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()


_configure()
