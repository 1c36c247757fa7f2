"""A pytest plugin: under CI=true a test skipped because a package did not import is a failure.

`make test` installs the pose stack, torchreid and fast-reid on purpose, so in CI such a skip means a broken
install, not a missing option. Other skips (CUDA-only tests, downloaded RTMPose weights, ../shared beside the
checkout) stay skips; `-rs` lists every skip with its reason at the end of the run. So tests call
`pytest.importorskip(name)` without a reason of their own: its 'could not import' is what marks the skip.
"""

from __future__ import annotations

import os

import pytest


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _import_failure(report) -> str | None:
    """The reason of a pytest.importorskip skip ('could not import ...'), else None."""
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason if "could not import" in reason else None


def _fail_import_skip(report) -> None:
    reason = _import_failure(report) if _ci() and report.skipped else None
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a package the set-up installs did not import, so this is a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skip(outcome.get_result())
