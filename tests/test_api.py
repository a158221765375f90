"""The public API: every top-level name resolves, lazily."""

import subprocess
import sys

import pytest

import linkstyle


def test_every_public_name_resolves():
    for name in linkstyle.__all__:
        assert getattr(linkstyle, name) is not None, name
    with pytest.raises(AttributeError):
        linkstyle.no_such_thing  # noqa: B018


def test_import_is_lazy():
    code = "import sys, linkstyle; print(any(m.startswith('linkstyle.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
