"""The test-class mixin a backend's own tests subclass to run the whole suite.

See the package docstring (``conformance/__init__.py``) for the ten lines a backend
writes. Each check of :data:`conformance.checks.CHECKS` is one test method here;
a check whose capability the backend does not declare is skipped, by capability
name, and every other check runs.
"""

from __future__ import annotations

import pytest
from hypothesis import settings as Settings

from conformance.checks import CHECKS, StorageFactory, capabilities_of
from conformance.profiles import get_settings


def _run(name: str, factory: StorageFactory, settings: Settings) -> None:
    check = CHECKS[name]
    if check.requires is not None and check.requires not in capabilities_of(factory):
        pytest.skip(f"the backend does not declare the {check.requires!r} capability")
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

    def test_protocol(self, make_storage: StorageFactory, conformance_settings: Settings) -> None:
        _run("protocol", make_storage, conformance_settings)

    def test_state_machine(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("state_machine", make_storage, conformance_settings)

    def test_payload_roundtrip(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("payload_roundtrip", make_storage, conformance_settings)

    def test_large_payload(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("large_payload", make_storage, conformance_settings)

    def test_unicode_worker_names(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("unicode_worker_names", make_storage, conformance_settings)

    def test_fifo_equal_run_at(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("fifo_equal_run_at", make_storage, conformance_settings)

    def test_reopen_keeps_everything(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("reopen_keeps_everything", make_storage, conformance_settings)

    def test_thread_race(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("thread_race", make_storage, conformance_settings)

    def test_process_race(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("process_race", make_storage, conformance_settings)

    def test_wakeup(self, make_storage: StorageFactory, conformance_settings: Settings) -> None:
        _run("wakeup", make_storage, conformance_settings)

    def test_wakeup_between_waits(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("wakeup_between_waits", make_storage, conformance_settings)

    def test_transactional_enqueue(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("transactional_enqueue", make_storage, conformance_settings)

    def test_complete_many(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("complete_many", make_storage, conformance_settings)

    def test_server_clock(
        self, make_storage: StorageFactory, conformance_settings: Settings
    ) -> None:
        _run("server_clock", make_storage, conformance_settings)
