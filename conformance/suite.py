"""The test-class mixin a backend's own tests subclass to run the whole suite.

See the package docstring (``conformance/__init__.py``) for the ten lines a backend
writes. Each check of :data:`conformance.checks.CHECKS` is one test method here,
``test_<check name>``; a check whose capability the backend does not declare is
skipped, by capability name, and every other check runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings as Settings

from conformance.checks import CHECKS, StorageFactory, capabilities_of
from conformance.profiles import get_settings


def _run(name: str, factory: StorageFactory, settings: Settings) -> None:
    check = CHECKS[name]
    missing = check.missing(capabilities_of(factory))
    if missing is not None:
        pytest.skip(f"the backend does not declare the {missing!r} capability")
    check.run(factory, settings)


@pytest.mark.exqueue_conformance
class StorageConformance:
    """Subclass this (name the class ``Test…``) and define the ``make_storage`` fixture.

    ``make_storage`` returns a zero-argument callable. Each call opens a new storage
    object over the *same* location (the suite calls it again to test
    close-and-reopen on a PERSISTENT backend); the location starts empty and is
    the test's alone. For a MULTI_PROCESS backend the callable must be picklable:
    a module-level function, the class, or ``functools.partial(MyStorage, ...)``.
    """

    @pytest.fixture
    def make_storage(self) -> StorageFactory:
        pytest.fail(
            "define a make_storage fixture on your StorageConformance subclass: it returns "
            "a callable that opens your storage over one location, e.g. "
            "functools.partial(MyStorage, tmp_path / 'jobs')"
        )

    @pytest.fixture
    def conformance_settings(self, request: pytest.FixtureRequest) -> Settings:
        # getoption's default covers runs where the plugin was not loaded.
        return get_settings(request.config.getoption("conformance_profile", default=None))


def _test_method(name: str) -> Callable[..., None]:
    def test(
        self: StorageConformance, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run(name, make_storage, conformance_settings)

    test.__name__ = f"test_{name}"
    test.__qualname__ = f"StorageConformance.test_{name}"
    test.__doc__ = f"[{CHECKS[name].area}] {CHECKS[name].rule}"
    return test


for _name in CHECKS:
    setattr(StorageConformance, f"test_{_name}", _test_method(_name))
