"""Fixtures shared by the single-process tests."""

import warnings

import pytest


@pytest.fixture
def no_warnings():
    """Turn every warning (e.g. numpy's divide-by-zero) into an error inside the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
