"""In CI a missing real-data file or real model fails the suite instead of skipping (issue #17): a green run must
have exercised the real-data and real-model tiers."""

from __future__ import annotations

import pytest
from conftest import shared_data_or_skip, skip_unless_ci


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_a_missing_resource_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        shared_data_or_skip("no-such-folder", "no-such-file.jsonl")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_resource_skips_outside_ci(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="real data not available"):
        shared_data_or_skip("no-such-folder", "no-such-file.jsonl")
    with pytest.raises(pytest.skip.Exception, match="MiniLM"):
        skip_unless_ci("install the MiniLM")
