"""The harness itself: it must catch what it promises to catch, or every case built on it proves nothing."""

from __future__ import annotations

import pytest

from tritc.errors import ModelFormatError

from .harness import isolated, refuses


def test_isolated_reports_the_error_class_and_the_cost(sb):
    out = isolated(sb, "from tritc.frontend.onnx import load_model_bytes\nload_model_bytes(b'')")
    out.raised(ModelFormatError, names=["empty"])
    assert 0 < out.peak_rss_mib < 4096


def test_isolated_fails_on_memory_error(sb):
    with pytest.raises(pytest.fail.Exception, match="MemoryError"):
        isolated(sb, "x = bytearray(8 * 2**30)", memory=2**30)


def test_isolated_fails_on_a_hang(sb):
    with pytest.raises(pytest.fail.Exception, match="hang"):
        isolated(sb, "import time\ntime.sleep(60)", timeout=3)


def test_isolated_fails_on_a_signal(sb):
    with pytest.raises(pytest.fail.Exception, match="SIGSEGV"):
        isolated(sb, "import ctypes\nctypes.string_at(0)")


def test_contract_sees_a_stray_file_and_a_leaked_marker(sb):
    (sb.out / "half.tritc").write_bytes(b"x")
    with pytest.raises(AssertionError, match="out/half.tritc"):
        sb.check()
    sb.mark()
    with pytest.raises(AssertionError, match="marker"):
        sb.check([sb.secret.read_text()])


def test_refuses_checks_the_names(sb):
    from tritc.frontend.onnx import load_model_bytes

    refuses(sb, lambda: load_model_bytes(b""), ModelFormatError, names=["empty"])
    with pytest.raises(AssertionError, match="not named"):
        refuses(sb, lambda: load_model_bytes(b""), ModelFormatError, names=["node 'x'"])


def test_cli_checks_exit_and_one_line(sb):
    p = sb.save(b"")
    sb.cli("compile", p, "-o", sb.out / "m.tritc", names=["model.onnx", "empty"])
