"""The exception for bad user input (the CLI turns it into one stderr line and exit code 2), and the one for SIGINT or
SIGTERM (one line and exit 130 or 143)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: names the input and the fix. Never carries a traceback to the user."""

    def __init__(self, subject: str, problem: str = "", fix: str = "") -> None:
        self.subject, self.problem, self.fix = subject, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        """One line: '<input>: <problem>. <fix>'."""
        if "Original Traceback" in self.subject:  # re-raised from a DataLoader worker: keep the original line
            return self.subject.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        text = f"{self.subject}: {self.problem}"
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())

    def __reduce__(self):  # keep the three fields across DataLoader worker processes
        return (type(self), (self.subject, self.problem, self.fix))


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwinds like KeyboardInterrupt, which Typer would turn into a silent return."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
