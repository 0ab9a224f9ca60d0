"""Expose several CPU devices to JAX so that MCMC chains can run in parallel.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so this runs on
``import bayesfuse`` (before bayesfuse imports JAX). It does nothing when JAX was already
imported, when the user already set the flag, or when ``BAYESFUSE_HOST_DEVICES=0``. The
count is at least 4 (the default number of chains) and at most 8 or the number of cores:
each device runs one chain in its own thread, so on 2 cores 4 chains still share both
cores (about twice as fast as vectorised chains on one core for large K). This is what
``numpyro.set_host_device_count`` does; GPU devices are not affected.
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
    cores = os.cpu_count() or 1
    count = int(requested) if requested and requested.isdigit() else max(4, min(cores, 8))
    if count <= 1:
        return
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()


_configure()
