"""The JAX settings a fit makes, when it runs, never on import.

Importing bayesfuse (any module of it) changes no global setting: not ``XLA_FLAGS``, not
JAX's configuration, not NumPyro's modules. Three settings are made when bayesfuse computes:

**64-bit floats.** Every fit computes in double precision, as NumPy does: :func:`enable_x64`
turns on JAX's ``jax_enable_x64`` for the process when :func:`bayesfuse.fuse` starts, and
again at the start of each function that computes with JAX on its own (the samplers, the
per-draw maps of :mod:`bayesfuse.inference.draws`, e.g. ``FusionResult.predict_new_task``
on a fit loaded from a file). It is a process-wide setting, not a scoped one (JAX's
``jax.enable_x64`` context): the draws of a fit are read again later, by result methods and
by studies such as :func:`bayesfuse.analysis.calibration.sbc`, and each of those would
silently compute in 32 bits outside a scope. After the first fit, JAX code of the caller
also creates float64 arrays by default. To choose yourself, call ``numpyro.enable_x64()``
(or ``jax.config.update("jax_enable_x64", True)``) before using bayesfuse.

**Host devices.** MCMC chains run in parallel on CPU when JAX sees several CPU devices.
:func:`configure_host_devices` asks for them (JAX's ``jax_num_cpu_devices``) when
:func:`bayesfuse.fuse` starts, which works only before JAX has run any computation
(JAX starts its backends once). It does nothing when the backends have already started,
when the user chose a count (``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
``numpyro.set_host_device_count(N)`` or ``jax_num_cpu_devices``), or when
``BAYESFUSE_HOST_DEVICES=0``. The count is ``BAYESFUSE_HOST_DEVICES`` if set, else at least
4 (the default number of chains) and at most 8 or the number of cores: each device runs one
chain in its own thread, so on 2 cores 4 chains still share both cores (about twice as fast
as vectorised chains on one core for large K). GPU devices are not affected. To choose
yourself, call ``numpyro.set_host_device_count(n)`` before your first JAX computation.

**Compilation cache.** Compiled samplers and per-draw maps are kept on disk and reused by
later processes: :func:`configure_compilation_cache` points JAX's persistent compilation
cache at a per-user folder when :func:`bayesfuse.fuse` starts, so a second ``bayesfuse fuse``
of the same model on data of the same (bucketed) shapes compiles nothing. The folder is
``$BAYESFUSE_COMPILATION_CACHE`` when that names a folder, else
``$XDG_CACHE_HOME/bayesfuse/jax`` (``~/.cache/bayesfuse/jax``). ``BAYESFUSE_COMPILATION_CACHE=0``
turns it off; a cache folder chosen for JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
``jax_compilation_cache_dir``) is used as it is. JAX keys each entry on the program, the
compiler options, the devices and its own version, so a hit gives the same executable; the
folder can be deleted at any time (it only costs the next fit its compilation). Like the
device count, it takes effect when set before the process compiles its first JAX program.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FLAG", "CACHE_ENV", "enable_x64", "configure_host_devices", "default_host_devices",
           "configure_compilation_cache", "default_cache_dir"]

#: The XLA flag with which a user sets the number of CPU devices.
FLAG = "--xla_force_host_platform_device_count"
#: The environment variable that chooses (a folder) or turns off (``0``) the compilation cache.
CACHE_ENV = "BAYESFUSE_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no"}


def enable_x64() -> None:
    """Turn on JAX's 64-bit mode (``jax_enable_x64``) for the process, if it is off.

    Called by every bayesfuse function that computes with JAX, before it does.
    """
    import jax

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def default_host_devices() -> int:
    """The number of CPU devices a fit asks for: ``BAYESFUSE_HOST_DEVICES`` if it is set,
    else between 4 and 8 (the number of cores where that is in between)."""
    requested = os.environ.get("BAYESFUSE_HOST_DEVICES")
    if requested and requested.isdigit():
        return int(requested)
    return max(4, min(os.cpu_count() or 1, 8))


def configure_host_devices(count: int | None = None) -> bool:
    """Ask JAX for ``count`` CPU devices (default :func:`default_host_devices`).

    Parameters
    ----------
    count : int, optional
        Number of CPU devices; ``0`` or ``1`` leaves JAX's default (one).

    Returns
    -------
    bool
        Whether the setting was made: not when the user already chose a count, when the
        count is at most 1, or when JAX's backends had already started.
    """
    import jax

    if FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices != -1:
        return False
    count = default_host_devices() if count is None else count
    if count <= 1:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backends have started: too late to change the device count
        return False
    return True


def default_cache_dir() -> Path:
    """The per-user folder of the compilation cache: ``$XDG_CACHE_HOME/bayesfuse/jax``,
    ``~/.cache/bayesfuse/jax`` when ``XDG_CACHE_HOME`` is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bayesfuse" / "jax"


def configure_compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at bayesfuse's folder, if none is chosen.

    Every compiled program is cached, however short its compilation (JAX's default keeps
    only those that took a second or more; a first fit compiles many small ones).

    Returns
    -------
    str or None
        The cache folder in use, or ``None`` when the cache is off
        (``BAYESFUSE_COMPILATION_CACHE=0``) or the folder cannot be created.
    """
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen:  # the user's (or JAX_COMPILATION_CACHE_DIR's) choice stands
        return chosen
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in _OFF:
        return None
    folder = Path(setting).expanduser() if setting and setting.lower() not in {"1", "on"} \
        else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: fits still run, they compile as before
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(folder)
