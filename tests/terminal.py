"""Run the CLI as on a user's terminal: stderr a pseudo-terminal (so progress bars show),
stdout a pipe (what a script would read)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from dataclasses import dataclass

CLI = [sys.executable, "-m", "lookalike"]


@dataclass
class OnTerminal:
    returncode: int
    shown: str  # everything written to the terminal (stderr), escape codes included
    stdout: str


def run_on_a_terminal(*args: str, timeout: float = 600) -> OnTerminal:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    out, _ = proc.communicate(timeout=timeout)
    os.close(leader)
    return OnTerminal(proc.returncode, shown.decode(errors="replace"), out.decode())
