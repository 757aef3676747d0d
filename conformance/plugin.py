"""pytest plugin of the conformance suite, loaded through the ``pytest11`` entry point.

It adds nothing to runs that do not use the suite: no tests, no fixtures, and no
import of Hypothesis (pytest loads this module in every run wherever exqueue is
installed, including installs without the ``conformance`` extra). It only
registers the ``--conformance-profile`` option and the ``exqueue_conformance``
marker; the tests come from subclassing :class:`conformance.StorageConformance`.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exqueue-conformance", "exqueue storage conformance suite")
    group.addoption(
        "--conformance-profile",
        dest="conformance_profile",
        default=None,
        metavar="NAME",
        help="Hypothesis profile of the exqueue conformance suite: dev (default) or ci; "
        "overrides EXQUEUE_CONFORMANCE_PROFILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "exqueue_conformance: a test of the exqueue storage conformance suite"
    )
