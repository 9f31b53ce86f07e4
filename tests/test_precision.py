"""bf16 is used only where the hardware runs it natively (emulated bf16 is many times slower)."""

from __future__ import annotations

import pytest

from conditioning import precision


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(*flags):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_bf16_is_kept_on_a_cpu_with_native_bf16(cpu_flags):
    cpu_flags("avx2", "avx512f", "avx512_bf16")
    assert precision.native_bf16("cpu")
    assert precision.effective_bf16(True, "cpu") is True
    assert precision.effective_mixed_precision("bf16", "cpu") == "bf16"
    cpu_flags("avx2", "amx_bf16")
    assert precision.effective_mixed_precision("bf16", "cpu") == "bf16"


def test_bf16_falls_back_to_fp32_where_it_is_only_emulated(cpu_flags):
    cpu_flags("avx2", "fma")
    assert not precision.native_bf16("cpu")
    assert precision.effective_bf16(True, "cpu") is False
    assert precision.effective_mixed_precision("bf16", "cpu") == "no"
    assert precision.effective_mixed_precision("no", "cpu") == "no"
    assert precision.effective_bf16(False, "cpu") is False
