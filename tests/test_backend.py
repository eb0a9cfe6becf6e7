"""The Keras backend: a missing library is one line with the install command."""

from __future__ import annotations

import pytest

from competition.errors import UserError


def test_a_missing_backend_library_is_one_line_with_the_install_command(monkeypatch):
    import importlib.util

    from competition import backend as backends

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    monkeypatch.delitem(__import__("sys").modules, "keras", raising=False)
    with pytest.raises(
        UserError, match="the jax backend needs jax, which is not installed here: pip install jax"
    ):
        backends.select("jax")

