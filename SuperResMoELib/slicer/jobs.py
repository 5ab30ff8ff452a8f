"""Running the ``superresmoe`` command line in a background process.

The Slicer module never runs a network in the GUI process: it writes its
inputs to a temporary folder, starts ``<python> -m SuperResMoELib enhance
... --progress json`` and reads one JSON object per stdout line
(:mod:`.progress_report`): ``{"stage", "fraction", "message"}`` while it runs,
then ``{"stage": "done", "exit_code", "result"}`` or ``{"stage": "error",
"exit_code", "message"}``.  This module is Qt-free: the GUI polls
:meth:`BackgroundProcess.poll` from a timer; tests and batch scripts call
:meth:`BackgroundProcess.wait`.

Cancel ends the whole process tree: the child starts its own process group
(session) and the group gets SIGTERM (the CLI stops at the next patch batch and
exits with code 5), then SIGKILL if it has not exited within a grace period.
The GUI cancels with ``block=False``: the SIGKILL then comes from a timer
thread and the GUI thread never waits.

Output is read as UTF-8 with replacement characters (the child is asked to
write UTF-8 too): a stray byte of a library's log line must not kill the reader
threads and hang the run.  On Windows the child gets no console window.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

#: Characters of stderr kept for error messages.
STDERR_TAIL_CHARS = 4000
#: Seconds between SIGTERM and SIGKILL when cancelling.
CANCEL_GRACE_S = 5.0


@dataclass
class ProgressEvent:
    """One progress line of the child: ``stage`` ("load", "enhance", "write",
    "evaluate", ..., "done", "error"), ``fraction`` in [0, 1], ``message``,
    and the whole object as ``raw``."""

    stage: str
    fraction: float
    message: str
    raw: dict[str, Any] = field(default_factory=dict)


def no_window_flags() -> int:
    """``creationflags`` that keep a child's console window from opening on Windows (0 elsewhere)."""
    if os.name == "nt":  # pragma: no cover - Windows
        return int(getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000))
    return 0


def parse_progress_line(line: str) -> ProgressEvent | None:
    """The event of one stdout line, or ``None`` for a line that is not a
    progress object (other output is tolerated and ignored)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "stage" not in obj:
        return None
    try:
        fraction = min(max(float(obj.get("fraction", 0.0)), 0.0), 1.0)
    except (TypeError, ValueError):
        fraction = 0.0
    return ProgressEvent(str(obj["stage"]), fraction, str(obj.get("message", "")), obj)


def python_executable() -> str:
    """The Python to run the CLI with: Slicer's ``PythonSlicer`` next to the
    running interpreter when there is one (inside Slicer ``sys.executable`` is
    the Slicer launcher), else ``sys.executable``."""
    exe = Path(sys.executable)
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = exe.with_name(name)
        if candidate.exists():
            return str(candidate)
    return sys.executable


class BackgroundProcess:
    """A child process whose stdout carries JSON progress lines.

    Args:
        argv: the command (``[python, "-m", "SuperResMoELib", ...]``).
        env: environment (default: this process's).
        cwd: working folder of the child.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        #: Every output line that is not a progress object (stderr and other stdout), for a log panel.
        self._log: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self.last: ProgressEvent | None = None
        self.final: ProgressEvent | None = None
        self.cancelled = False

    # ------------------------------------------------------------- control
    def start(self) -> "BackgroundProcess":
        """Start the child in its own process group."""
        kwargs: dict[str, Any] = {}
        if os.name == "nt":  # pragma: no cover - Windows: own group, no console window
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | no_window_flags()  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONIOENCODING", "utf-8")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=self.cwd,
                                     **kwargs)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_progress_line(line)
            if event is not None:
                self._events.put(event)
            elif line.strip():
                self._log.put(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        size = 0
        for line in self.proc.stderr:
            self._stderr.append(line)
            if line.strip():
                self._log.put(line.rstrip("\n"))
            size += len(line)
            while size > 2 * STDERR_TAIL_CHARS and len(self._stderr) > 1:
                size -= len(self._stderr.pop(0))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def poll(self) -> list[ProgressEvent]:
        """Events received since the last call (never blocks)."""
        out = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            out.append(event)
            self.last = event
            if event.stage in ("done", "error"):
                self.final = event
        return out

    def log_lines(self) -> list[str]:
        """Output lines (stderr, and stdout lines that are not progress) since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._log.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None, on_event: Callable[[ProgressEvent], None] | None = None,
             interval: float = 0.05) -> int:
        """Block until the child exits, passing events to ``on_event``.

        Raises:
            TimeoutError: still running after ``timeout`` seconds (it is cancelled first).
        """
        assert self.proc is not None, "start() first"
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if self.proc.poll() is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"the background process ran longer than {timeout} s and was cancelled")
            time.sleep(interval)
        for t in self._threads:
            t.join(timeout=5)
        for event in self.poll():
            if on_event is not None:
                on_event(event)
        return int(self.proc.returncode)

    def cancel(self, grace: float = CANCEL_GRACE_S, block: bool = True) -> None:
        """End the child and everything it started (SIGTERM to its process
        group, SIGKILL after ``grace`` seconds).  ``block=False`` (the GUI)
        returns at once; a daemon thread sends the SIGKILL if it is needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":  # pragma: no cover - Windows
            kill = ["taskkill", "/F", "/T", "/PID", str(self.proc.pid)]
            if block:
                subprocess.run(kill, capture_output=True, creationflags=no_window_flags())
            else:
                subprocess.Popen(kill, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 creationflags=no_window_flags())
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if block:
            self._kill_after(grace)
        else:
            threading.Thread(target=self._kill_after, args=(grace,), daemon=True).start()

    def _kill_after(self, grace: float) -> None:
        """SIGKILL the process group unless the child exits within ``grace`` seconds."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    # ------------------------------------------------------------- results
    def stderr_tail(self, chars: int = STDERR_TAIL_CHARS) -> str:
        """The last ``chars`` characters the child wrote to stderr."""
        return "".join(self._stderr)[-chars:]

    @property
    def result(self) -> dict[str, Any] | None:
        """The ``result`` object of the final ``done`` line, if any."""
        if self.final is not None and self.final.stage == "done":
            return self.final.raw.get("result")
        return None

    def error_message(self) -> str:
        """What went wrong, for a dialog: the CLI's one-line error, else the
        stderr tail, else the exit code."""
        if self.final is not None and self.final.stage == "error":
            return self.final.message
        tail = self.stderr_tail().strip()
        errors = [line.strip() for line in tail.splitlines() if "error:" in line]
        if errors:  # e.g. an argparse usage error: its last line says what is wrong
            return errors[-1]
        if tail:
            return tail
        return f"the process exited with code {self.returncode}"


def cli_command(arguments: Sequence[str], python: str | None = None) -> list[str]:
    """``[python, "-m", "SuperResMoELib", *arguments, "--progress", "json"]``."""
    return [python or python_executable(), "-m", "SuperResMoELib", *[str(a) for a in arguments],
            "--progress", "json"]


def library_environment(extra_paths: Sequence[str | os.PathLike] = ()) -> dict[str, str]:
    """This process's environment with the folder holding ``SuperResMoELib``
    (and ``extra_paths``) first on ``PYTHONPATH``, so the child imports the
    same library as the parent (inside Slicer the extension's folder is not on
    the child's default path)."""
    here = Path(__file__).resolve().parents[1]
    paths = [str(here), *[str(p) for p in extra_paths]]
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
