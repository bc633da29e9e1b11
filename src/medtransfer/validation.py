"""Pydantic's validation errors as one UserError line, the same for run settings and study files.

Every problem reads `where: message`, a refused choice naming the value given (`mode 'probe'`, `split_dirs key
'foo'`), and the fix is said once: a problem's own fix where it is the only problem, else each problem's own fix
beside it and the caller's fix at the end. Checks that know their subject and fix (the data layer's rules, rules
across settings) raise `as_pydantic(...)`, so pydantic collects them with every other problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from medtransfer.errors import UserError

USER_ERROR = "user_error"  # the pydantic error type of problems that carry their own subject and fix


@dataclass(frozen=True)
class Problem:
    """One problem: `where: message`, and its own fix where it has one."""

    text: str
    fix: str = ""


def as_pydantic(errors: Sequence[UserError]) -> PydanticCustomError:
    """UserErrors raised from a validator: one pydantic error that keeps each one's subject, problem and fix."""
    found = [{"subject": e.subject, "problem": e.problem, "fix": e.fix} for e in errors]
    return PydanticCustomError(USER_ERROR, "{lines}", {"lines": "; ".join(e.line() for e in errors), "problems": found})


def _where(err: ErrorDetails) -> str:
    """Where a problem is, as dotted keys; a refused mapping key or choice names the value given."""
    loc = [str(part) for part in err["loc"]]
    if loc[-1:] == ["[key]"]:  # pydantic's loc of a mapping key is (..., key, "[key]")
        return ".".join(loc[:-2]) + f" key {err['input']!r}"
    where = ".".join(loc)
    return f"{where} {err['input']!r}" if err["type"] == "literal_error" else where


def error_problems(err: ErrorDetails) -> list[Problem]:
    """One pydantic error as problems: a UserError's own subject and fix, else `where: message`."""
    if err["type"] == USER_ERROR:
        return [Problem(f"{p['subject']}: {p['problem']}", p["fix"]) for p in err.get("ctx", {})["problems"]]
    message = err["msg"].removeprefix("Value error, ")
    where = _where(err)
    return [Problem(f"{where}: {message}" if where else message)]


def problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Every problem of a ValidationError, in pydantic's order, each text after PREFIX."""
    return [Problem(prefix + p.text, p.fix) for err in exc.errors() for p in error_problems(err)]


def one_error(subject: str, found: Sequence[Problem], fix: str) -> UserError:
    """One UserError for every problem (each once): the fix is the problem's own when it is the only one and has
    one; otherwise each problem's own fix stands beside it, and FIX ends the line."""
    unique = list(dict.fromkeys(found))
    if len(unique) == 1 and unique[0].fix:
        return UserError(subject, unique[0].text, unique[0].fix)
    return UserError(subject, "; ".join(f"{p.text} ({p.fix})" if p.fix else p.text for p in unique), fix)
