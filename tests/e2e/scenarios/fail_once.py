"""A harness self-test scenario for --retest-regressions, run by tests/e2e/test_results.py
beside the smoke profile (never part of a user profile): it fails on its first try only.

The e2e test creates the file that $XENHIL_E2E_FAIL_ONCE names; the test removes it as it
fails, so its retest at the end of the run passes: FLAKY, not a regression. Without that
file it passes, as it does in the baseline run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.area("selftest")
def test_fails_on_its_first_try_only() -> None:
    trigger = os.environ.get("XENHIL_E2E_FAIL_ONCE")
    if trigger and Path(trigger).exists():
        Path(trigger).unlink()
        pytest.fail("first try: failing once, as the e2e test asked")
