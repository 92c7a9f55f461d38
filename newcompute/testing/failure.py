"""The one error the conformance checks raise."""

from __future__ import annotations


class ConformanceFailure(AssertionError):
    """A paradigm breaks the plugin contract; the message names the rule and the offending part.

    It is an ``AssertionError`` so pytest reports it as a failed test, and
    it is raised explicitly (not with ``assert``) so the checks still run
    under ``python -O``.
    """


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceFailure(message)
