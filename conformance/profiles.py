"""Hypothesis settings profiles of the conformance suite, and how one is chosen.

Two profiles are registered under namespaced Hypothesis names so they never
replace a project's own ``dev``/``ci`` profiles, and the suite applies them to
its own tests only (it never calls ``settings.load_profile``):

* ``dev`` (``exqueue-conformance-dev``): a quick pass while coding.
* ``ci``  (``exqueue-conformance-ci``): thorough, yet under a minute per backend
  on a 2-core machine with the servers local.

Pick one with ``--conformance-profile=ci`` or ``EXQUEUE_CONFORMANCE_PROFILE=ci``;
the option wins over the variable, and ``dev`` is the default. Any other value is
taken as the name of a Hypothesis profile the project registered itself.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

ENV_VAR = "EXQUEUE_CONFORMANCE_PROFILE"
DEFAULT = "dev"
PROFILES = {"dev": "exqueue-conformance-dev", "ci": "exqueue-conformance-ci"}

# Real backends talk to servers: a slow example is jitter, not a bug, so no
# deadline and no speed health checks. No example database: the storage under
# test changes between runs, so replaying old failures would mislead.
_COMMON = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile(
    PROFILES["dev"],
    max_examples=25,
    stateful_step_count=25,
    **_COMMON,  # type: ignore[arg-type]
)
settings.register_profile(
    PROFILES["ci"],
    # 40: the targeted checks carry the edge cases deterministically; with them,
    # PostgreSQL and MariaDB stay under a minute on a shared 2-core machine.
    max_examples=40,
    stateful_step_count=30,
    **_COMMON,  # type: ignore[arg-type]
)


def profile_name(option: str | None = None) -> str:
    """The chosen profile's short name: the option, else the env var, else ``dev``."""
    return option or os.environ.get(ENV_VAR) or DEFAULT


def get_settings(option: str | None = None) -> settings:
    """The Hypothesis settings of the chosen profile."""
    name = profile_name(option)
    try:
        return settings.get_profile(PROFILES.get(name, name))
    except Exception as exc:  # Hypothesis raises InvalidArgument for unknown names
        known = ", ".join(PROFILES)
        raise ValueError(
            f"unknown conformance profile {name!r}: use one of {known} "
            "or the name of a registered Hypothesis profile"
        ) from exc
