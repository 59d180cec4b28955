"""Every error a user can cause is a `GradsvcError`: one message, a place, a hint, an exit code.

The CLI prints `str(error)` and exits with `error.exit_code`; it never shows a traceback for these.
A place is `file:line:col` (1-based, like compilers and editors use), optionally followed by the
offending source line and a caret under the column.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

EXIT_OK = 0
EXIT_MISMATCH = 1  # the job ran, but JAX and the reference (or finite differences) disagree
EXIT_INVALID = 2  # the job file, a formula or the command line is wrong
EXIT_DEVICE = 3  # the job is fine but the requested device is not available here
EXIT_IO = 4  # results could not be written (disk full, permissions, a vanished folder)
EXIT_BUSY = 5  # another `gradsvc batch` is writing to the same --out folder: wait and rerun
EXIT_INTERNAL = 70  # a bug in gradsvc, not the user's doing (EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # `gradsvc batch` stopped by SIGTERM (128 + 15), handled as Ctrl-C is


@dataclass(frozen=True)
class Location:
    """A place in a source file; `line` and `col` are 1-based."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


class GradsvcError(Exception):
    """Root of every user-facing error. Subclasses set `exit_code` and a default `hint`."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, where: Location | None = None, text: str | None = None,
                 caret_col: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.text = text  # the offending source line or formula, shown under the message
        self.caret_col = caret_col  # 1-based column in `text` to point at
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        lines = [f"{head}error: {self.message}"]
        if self.text is not None:
            lines.append(f"    {self.text}")
            if self.caret_col is not None:
                lines.append("    " + " " * (self.caret_col - 1) + "^")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class JobFileError(GradsvcError):
    """The job file cannot be read, is not safe YAML, or does not match the job schema."""


class JobProblems(JobFileError):
    """Several problems of one job file, each a `GradsvcError` in `problems`, in file order.
    `str()` shows every one with its place and hint, then a count line."""

    def __init__(self, problems: list[GradsvcError]):
        def place(p: GradsvcError) -> tuple:
            return (p.where is None, p.where.line or 0, p.where.col or 0) if p.where else (True,)
        self.problems = sorted(problems, key=place)
        first = self.problems[0]
        super().__init__(f"{len(problems)} problems: {first.message}", where=first.where,
                         hint=first.hint)
        self.exit_code = max(p.exit_code for p in problems)

    def __str__(self) -> str:
        where = f" in {self.where.file}" if self.where else ""
        return "\n".join([*map(str, self.problems), f"{len(self.problems)} problems{where}"])

    @staticmethod
    def of(problems: list[GradsvcError]) -> GradsvcError:
        """The one problem itself, or all of them as one error."""
        return problems[0] if len(problems) == 1 else JobProblems(problems)


class FormulaError(GradsvcError):
    """A formula uses syntax or names outside the allowed language."""


class GraphError(GradsvcError):
    """The graph as a whole is wrong: undefined names, cycles, unknown outputs or wrt names."""


class LimitError(GradsvcError):
    """An input exceeds one of the named limits in `gradsvc.limits`."""


class UsageError(GradsvcError):
    """The command line or API call is wrong (bad option value, missing file)."""


class DeviceError(GradsvcError):
    """The requested device (gpu, tpu) has no JAX backend on this machine."""

    exit_code = EXIT_DEVICE


class ClusterError(GradsvcError):
    """The Dask cluster could not run a job: its workers kept dying, or the scheduler went away."""

    exit_code = EXIT_DEVICE


class ResultError(GradsvcError):
    """A result folder is not a finished, intact gradsvc result (a file missing, truncated or
    changed since it was written, or another result format)."""


class BusyError(GradsvcError):
    """Another `gradsvc batch` holds the output folder's lock."""

    exit_code = EXIT_BUSY


class ServiceError(GradsvcError):
    """A gradsvc service refused a request (`status`: its HTTP status) or could not be reached
    (`status` None). `retry_after`: the seconds a 429 asks to wait; `problems`: each problem of
    a job that has several, shown one by one as `JobProblems` shows them."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None, problems: tuple | list = (), **place):
        super().__init__(message, **place)
        self.status = status
        self.retry_after = retry_after
        self.problems = list(problems)
        # a 4xx is the request's fault; 429 asks to wait and ask again; no answer, or a 5xx,
        # is the service's side, as an unreachable cluster is
        self.exit_code = (EXIT_BUSY if status == 429 else EXIT_INVALID
                          if status is not None and status < 500 else EXIT_DEVICE)

    def __str__(self) -> str:
        if len(self.problems) < 2:
            return super().__str__()
        where = f" in {self.where.file}" if self.where else ""
        return "\n".join([*map(str, self.problems), f"{len(self.problems)} problems{where}"])


def internal_error(error: Exception, file: str | None = None) -> str:
    """The message for a bug in gradsvc (not the user's doing): what was raised, and a plea."""
    where = f"{file}: " if file else ""
    return (f"{where}internal error: {type(error).__name__}: {error}\n"
            "  hint: this is a bug in gradsvc; please report it with the job file")


class OutputError(GradsvcError):
    """A result or picture could not be written (disk full, permissions, a vanished folder)."""

    exit_code = EXIT_IO


WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file would pass this process's file size limit (ulimit -f)",
    errno.EROFS: "the output folder is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_failure_words(error: OSError, name_file: bool = True) -> str:
    """Why a write failed, in words ("the disk is full"), with the file when the error names it
    (`name_file=False` where the message names it already)."""
    why = WRITE_FAILURES.get(error.errno, error.strerror or str(error))
    return why + (f" ({error.filename})" if name_file and error.filename else "")
