"""Background CLI runs: JSON progress parsing, stderr tail, cancel of the
whole process tree (real subprocesses)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest

from SuperResMoELib.slicer.jobs import BackgroundProcess, cli_command, library_environment, parse_progress_line


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_parse_progress_lines() -> None:
    e = parse_progress_line('{"stage": "enhance", "fraction": 0.25, "message": "batch 1/4"}\n')
    assert (e.stage, e.fraction, e.message) == ("enhance", 0.25, "batch 1/4")
    assert parse_progress_line('{"stage": "x", "fraction": 7}').fraction == 1.0  # clamped
    assert parse_progress_line('{"stage": "x", "fraction": "?"}').fraction == 0.0
    for junk in ("", "INFO: hello", "{not json", '{"fraction": 0.5}', "[1, 2]"):
        assert parse_progress_line(junk) is None


def test_events_result_and_exit_code() -> None:
    proc = BackgroundProcess(script("""
        import json, sys
        print("some log line")
        for i in range(3):
            print(json.dumps({"stage": "enhance", "fraction": (i + 1) / 3, "message": f"step {i}"}), flush=True)
        print(json.dumps({"stage": "done", "fraction": 1, "exit_code": 0, "result": {"answer": 42}}))
        print("warning on stderr", file=sys.stderr)
    """)).start()
    seen = []
    assert proc.wait(timeout=60, on_event=seen.append) == 0
    assert [e.message for e in seen if e.stage == "enhance"] == ["step 0", "step 1", "step 2"]
    assert proc.result == {"answer": 42} and "warning on stderr" in proc.stderr_tail()


def test_error_message_prefers_the_cli_error_then_stderr() -> None:
    proc = BackgroundProcess(script("""
        import json
        print(json.dumps({"stage": "error", "fraction": 1, "message": "bad input: x", "exit_code": 3}))
        raise SystemExit(3)
    """)).start()
    assert proc.wait(timeout=60) == 3 and proc.error_message() == "bad input: x" and proc.result is None
    crash = BackgroundProcess(script("raise RuntimeError('boom')")).start()
    assert crash.wait(timeout=60) == 1 and "RuntimeError: boom" in crash.error_message()


def test_stderr_tail_is_bounded() -> None:
    proc = BackgroundProcess(script("""
        import sys
        for i in range(5000):
            print(f"line {i:05d} " + "x" * 40, file=sys.stderr)
    """)).start()
    proc.wait(timeout=60)
    tail = proc.stderr_tail()
    assert len(tail) <= 4000 and "line 04999" in tail and "line 00000" not in tail


@pytest.mark.skipif(os.name == "nt", reason="process groups: POSIX")
def test_cancel_ends_the_whole_process_tree(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    proc = BackgroundProcess(script(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print('{{"stage": "enhance", "fraction": 0.1, "message": "working"}}', flush=True)
        time.sleep(600)
    """)).start()
    seen = []  # wait for the progress line: the pid file is complete by then
    deadline = time.monotonic() + 30
    while not seen and proc.running and time.monotonic() < deadline:
        seen += proc.poll()
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    proc.cancel(grace=2.0)
    # cancel() itself ended the child, by the SIGTERM (not the SIGKILL after the grace
    # period, nor its own exit 600 s later)
    assert not proc.running and proc.returncode == -signal.SIGTERM
    assert proc.wait(timeout=30, on_event=seen.append) != 0 and proc.cancelled
    # it stopped early: the one progress event it printed, no final "done"
    assert [e.message for e in seen] == ["working"] and proc.final is None and proc.result is None
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # the grandchild is gone too
        for _ in range(50):
            os.kill(grandchild, 0)
            time.sleep(0.1)


def test_bad_bytes_do_not_kill_the_readers() -> None:
    """Invalid UTF-8 on stdout and stderr: replaced, the following lines still arrive."""
    proc = BackgroundProcess(script("""
        import json, sys
        sys.stdout.buffer.write(b"log \\xff\\xfe line\\n"); sys.stdout.flush()
        sys.stderr.buffer.write(b"err \\xc3\\x28 bad\\n"); sys.stderr.flush()
        print(json.dumps({"stage": "enhance", "fraction": 0.5, "message": "h\u00e9llo"}), flush=True)
        print(json.dumps({"stage": "done", "fraction": 1, "exit_code": 0, "result": {"ok": True}}), flush=True)
    """)).start()
    seen = []
    assert proc.wait(timeout=60, on_event=seen.append) == 0
    assert [e.message for e in seen if e.stage == "enhance"] == ["h\u00e9llo"] and proc.result == {"ok": True}
    assert "err \ufffd( bad" in proc.stderr_tail()


@pytest.mark.skipif(os.name == "nt", reason="process groups: POSIX")
def test_non_blocking_cancel_returns_at_once_and_kills_later() -> None:
    """The GUI's cancel: a child that ignores SIGTERM is SIGKILLed after the grace
    period by a timer thread; the caller never waits."""
    proc = BackgroundProcess(script("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('{"stage": "enhance", "fraction": 0.1, "message": "stubborn"}', flush=True)
        time.sleep(600)
    """)).start()
    deadline = time.monotonic() + 30
    while not proc.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.cancel(grace=1.0, block=False)
    assert time.monotonic() - t0 < 0.5 and proc.running  # returned at once; SIGTERM ignored
    assert proc.wait(timeout=30) == -signal.SIGKILL and proc.cancelled


def test_wait_timeout_cancels() -> None:
    proc = BackgroundProcess(script("import time; time.sleep(600)")).start()
    with pytest.raises(TimeoutError, match="cancelled"):
        proc.wait(timeout=1.0)
    assert not proc.running


def test_cli_command_runs_the_library_cli(tmp_path) -> None:
    proc = BackgroundProcess(cli_command(["info", "--json"], sys.executable), env=library_environment(),
                             cwd=tmp_path).start()
    assert proc.wait(timeout=120) == 0
    assert proc.final is not None and proc.final.stage == "done"


def test_log_lines_hold_everything_but_progress() -> None:
    proc = BackgroundProcess(script("""
        import json, sys
        print("plain stdout line", flush=True)
        print(json.dumps({"stage": "enhance", "fraction": 0.5, "message": "x"}), flush=True)
        print("a warning", file=sys.stderr, flush=True)
    """)).start()
    proc.wait(timeout=60)
    lines = proc.log_lines()
    assert sorted(lines) == ["a warning", "plain stdout line"] and proc.log_lines() == []
