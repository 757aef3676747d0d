"""What RedisStorage's area mixins share: their scripts, registered at first use.

The limits, control, schedules and observe areas (``_limits``, ``_control``,
``_schedules``, ``_observe``) each keep a few scripts that most storages never
run; :meth:`LazyScripts._lazy` registers one on its first call. A script is
kept under its area and name together, since two areas may name a script
alike: limits and schedules each have a ``PAUSE``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from exqueue_redis._prelude import prelude_for


@functools.cache
def with_prelude(body: str) -> str:
    """``body`` after the prelude statements it needs."""
    return prelude_for(body) + body


class LazyScripts:
    """The view an area mixin has of ``RedisStorage`` (a base class of each mixin)."""

    _client: Any
    _scripts: dict[str, Any]

    def _run(self, name: str, *args: bytes | str | int | float) -> Any: ...  # RedisStorage's

    def _lazy(
        self, area: str, sources: Mapping[str, str], name: str, *, prelude: bool = True
    ) -> str:
        """The key :meth:`_run` takes for the script ``sources[name]`` of ``area``, registered
        now on first use (after the prelude it needs, unless ``prelude`` is False)."""
        key = f"{area}:{name}"
        if key not in self._scripts:
            body = sources[name]
            self._scripts[key] = self._client.register_script(
                with_prelude(body) if prelude else body
            )
        return key
