"""keep_freed_memory: glibc takes the setting here; the environment switch turns it off."""

from __future__ import annotations

import platform

import pytest

from phaseguard.cpu_memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_glibc_takes_the_setting():
    assert keep_freed_memory()


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_environment_switch_keeps_the_defaults(monkeypatch, value):
    monkeypatch.setenv("PHASEGUARD_SYSTEM_MALLOC", value)
    assert not keep_freed_memory()
