"""Running a command the harness builds for a host through bash here, with harmless
stand-ins for the programs it calls, to see the words each program would get."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

# A hostile lab value that, if the shell ever evaluated it, would run `reboot` (a
# stand-in here that leaves the file PWNED behind).
HOSTILE = ("vlab1;touch${IFS}PWNED", "$(reboot)", "`reboot`", "x'y\"z", "a&&reboot")


def calls(command: str, cwd: Path, *programs: str, failing: str = "") -> list[list[str]]:
    """Run `command` in bash in `cwd`, each of `programs` replaced by a function that
    records its argv (and fails if it is `failing`); return the argvs in call order.
    `reboot` is always a stand-in."""
    log = shlex.quote(str(cwd / ".calls"))
    stand_ins = "".join(
        f"{name}() {{ builtin printf '%s\\0' {name} \"$@\" >> {log}; "
        f"builtin printf '\\1' >> {log}; {'false' if name == failing else 'true'}; }}\n"
        for name in programs)
    pwned = shlex.quote(str(cwd / "PWNED"))
    script = f"reboot() {{ touch {pwned}; }}\n{stand_ins}{command}\nwait\n"
    subprocess.run(["bash", "-c", script], cwd=cwd, check=False, timeout=30)
    assert not (cwd / "PWNED").exists(), f"the shell ran part of a value: {command}"
    record = cwd / ".calls"
    text = record.read_text() if record.exists() else ""
    record.unlink(missing_ok=True)
    return [call.split("\0")[:-1] for call in text.split("\1")[:-1]]


def stand_in(path: Path, body: str) -> None:
    """A program at `path` that runs the sh script `body`, for a command that execs it
    (through `timeout`, say) where a shell function cannot stand in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
