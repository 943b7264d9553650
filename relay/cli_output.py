"""How the remote commands talk to a person or a script: rich tables or JSON on stdout, notes
and errors on stderr, progress bars for bulk work, and exit codes a shell can rely on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from relay.client import AuthError, RelayError, TransportError

EXIT_OK = 0
EXIT_API = 1  # the relay answered with an error: not found, invalid, server error
EXIT_USAGE = 2  # the command line is wrong (click's own code)
EXIT_AUTH = 3  # the token is missing or not accepted
EXIT_UNREACHABLE = 4  # no answer: the relay is down or QSTASH_URL is wrong

EXIT_CODES_HELP = """\b
Remote commands talk to a running relay at QSTASH_URL with QSTASH_TOKEN (or --url/--token);
--json prints JSON for scripts instead of tables.
\b
Exit codes:
  0  success
  1  the relay answered with an error (unknown id, invalid request, server error),
     or a confirmation was declined
  2  usage error (a wrong option or argument)
  3  authentication failed (missing or wrong token)
  4  the relay could not be reached"""

Row = Sequence[Any]


class Output:
    """Where one command's results go: aligned tables for people, JSON for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # Piped output keeps whole lines: a table is not squeezed to 80 columns.
        self.console = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
        self.errors = Console(stderr=True, highlight=False)

    def json(self, value: Any) -> None:
        """One JSON document (or one line of a stream) on stdout."""
        click.echo(json.dumps(jsonable(value), ensure_ascii=False))

    def table(
        self, columns: Sequence[str], rows: Sequence[Row], *, title: str | None = None
    ) -> None:
        table = Table(
            box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left"
        )
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        self.console.print(table)

    def record(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """One object as a two-column table; empty fields left out."""
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in pairs:
            if value not in (None, "", [], {}, ()):
                table.add_row(name, cell(value))
        self.console.print(table)

    def line(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, markup=False)

    def result(self, value: Any, text: str) -> None:
        """A command's outcome: ``value`` as JSON for scripts, else ``text`` for people."""
        if self.as_json:
            self.json(value)
        else:
            self.line(text)

    def note(self, text: str) -> None:
        """A remark for people (stderr), never mixed into what a script reads."""
        self.errors.print(text, soft_wrap=True, markup=False)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr while a bulk operation runs (when stderr is a terminal)."""
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.errors,
            transient=True,
            disable=not self.errors.is_terminal,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.advance(task, done)

    def fail(self, error: RelayError) -> NoReturn:
        """Report an API error and exit with its code."""
        if isinstance(error, AuthError):
            code = EXIT_AUTH
        elif isinstance(error, TransportError):
            code = EXIT_UNREACHABLE
        else:
            code = EXIT_API
        if self.as_json:
            click.echo(json.dumps({"error": error.message, "status": error.status}), err=True)
        else:
            status = f" ({error.status})" if error.status else ""
            self.note(f"relay: error{status}: {error.message}")
        sys.exit(code)


def cell(value: Any) -> str:
    """A table cell: lists joined, dicts as ``k: v`` lines, None empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {cell(v)}" for k, v in value.items())
    return str(value)


def jsonable(value: Any) -> Any:
    """Client dataclasses as the API's camelCase JSON, without empty fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _camel(f.name): jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) not in (None, (), [], {})
        }
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def when(ms: int | None) -> str:
    """A unix-millisecond time as local date and time, to the millisecond."""
    if ms is None:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
