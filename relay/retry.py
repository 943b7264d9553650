"""When to try again: QStash's default backoff, the `Upstash-Retry-Delay` expression language,
`Retry-After`-style response headers, and the table that classifies one attempt's outcome."""

from __future__ import annotations

import ast
import enum
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from relay.protocol import NON_RETRYABLE_STATUS, BadRequest, parse_bool, parse_duration

MAX_BACKOFF_MS = 86_400_000  # QStash caps every retry delay at one day
RETRY_AFTER_HEADERS = (
    "retry-after",
    "x-ratelimit-reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


def default_backoff_ms(retry_number: int) -> int:
    """QStash's default: ``min(1 day, e^(2.5·n))`` seconds before retry number ``n`` (1-based)."""
    return int(min(86_400.0, math.exp(2.5 * retry_number)) * 1000)


# --- the retry-delay expression language -------------------------------------------------------

_FUNCTIONS: dict[str, tuple[int, Callable[..., float]]] = {
    "pow": (2, lambda x, y: _bounded_pow(x, y)),
    "exp": (1, lambda x: math.exp(min(x, 700.0))),
    "sqrt": (1, lambda x: math.sqrt(x) if x >= 0 else 0.0),
    "abs": (1, abs),
    "floor": (1, math.floor),
    "ceil": (1, math.ceil),
    "round": (1, lambda x: math.copysign(math.floor(abs(x) + 0.5), x)),  # half away from 0
    "min": (2, min),
    "max": (2, max),
}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda a, b: a / b if b else math.inf,
    ast.Mod: lambda a, b: a % b if b else 0.0,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _bounded_pow(x: float, y: float) -> float:
    try:
        return float(math.pow(x, min(y, 1000.0)))
    except (OverflowError, ValueError):
        return math.inf


@dataclass(frozen=True, slots=True)
class RetryDelay:
    """A parsed `Upstash-Retry-Delay` expression: milliseconds as a function of ``retried``.

    Parsed with Python's ``ast`` and evaluated by walking a whitelist of nodes — numbers, the
    variable ``retried``, ``+ - * / %``, parentheses and QStash's nine functions — never ``eval``.
    """

    source: str
    tree: ast.expr

    @classmethod
    def parse(cls, source: str) -> RetryDelay:
        if len(source) > 500:
            raise BadRequest("invalid retry delay expression: longer than 500 characters")
        try:
            tree = ast.parse(source.strip(), mode="eval").body
        except SyntaxError:
            raise BadRequest(f"invalid retry delay expression {source!r}") from None
        _validate(tree, source)
        return cls(source=source, tree=tree)

    def delay_ms(self, retried: int) -> int:
        """The delay before the next retry, clamped to [0, 1 day]."""
        try:
            value = _evaluate(self.tree, float(retried))
        except (ArithmeticError, ValueError):
            value = math.inf
        if math.isnan(value):
            value = 0.0
        return int(min(max(value, 0.0), MAX_BACKOFF_MS))


def _validate(node: ast.expr, source: str) -> None:
    bad = BadRequest(f"invalid retry delay expression {source!r}")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise bad
    elif isinstance(node, ast.Name):
        if node.id != "retried":
            raise BadRequest(f"invalid retry delay expression {source!r}: unknown name {node.id!r}")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise bad
        _validate(node.left, source)
        _validate(node.right, source)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise bad
        _validate(node.operand, source)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS or node.keywords:
            raise BadRequest(f"invalid retry delay expression {source!r}: unknown function")
        arity, _ = _FUNCTIONS[name]
        if len(node.args) != arity:
            raise BadRequest(f"invalid retry delay expression {source!r}: {name} takes {arity}")
        for arg in node.args:
            _validate(arg, source)
    else:
        raise bad


def _evaluate(node: ast.expr, retried: float) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return retried
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, retried), _evaluate(node.right, retried))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, retried))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    _, function = _FUNCTIONS[node.func.id]
    return float(function(*(_evaluate(arg, retried) for arg in node.args)))


# --- response headers that set the next retry time ---------------------------------------------


def retry_after_ms(headers: Iterable[tuple[str, str]], now_ms: int) -> int | None:
    """The delay a response asks for (seconds, HTTP date or Go duration), or None.

    Values over one day are ignored, as QStash ignores them.
    """
    found = {name.lower(): value for name, value in headers}
    for name in RETRY_AFTER_HEADERS:
        value = found.get(name)
        if value is None:
            continue
        delay = _parse_retry_after(value.strip(), now_ms)
        if delay is not None and 0 <= delay <= MAX_BACKOFF_MS:
            return delay
    return None


def _parse_retry_after(value: str, now_ms: int) -> int | None:
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        return int(parse_duration(value) * 1000)
    except BadRequest:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


# --- the outcome of one attempt ----------------------------------------------------------------


class Outcome(enum.Enum):
    """How one attempt ended, as far as retrying is concerned."""

    DELIVERED = "delivered"
    NON_RETRYABLE = "non-retryable"
    RETRYABLE = "retryable"


def classify(status: int | None, headers: Iterable[tuple[str, str]]) -> Outcome:
    """2xx delivered; 489 with `Upstash-NonRetryable-Error: true` final; everything else retried."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == NON_RETRYABLE_STATUS and any(
        name.lower() == "upstash-nonretryable-error" and parse_bool(value)
        for name, value in headers
    ):
        return Outcome.NON_RETRYABLE
    return Outcome.RETRYABLE


def next_retry_delay_ms(
    *,
    retried: int,
    expression: RetryDelay | None,
    response_headers: Iterable[tuple[str, str]],
    now_ms: int,
) -> int:
    """Delay before the next retry, ``retried`` being the retries already done before this one.

    A `Retry-After`-style header wins; then the message's expression; then the default backoff.
    """
    asked = retry_after_ms(response_headers, now_ms)
    if asked is not None:
        return asked
    if expression is not None:
        return expression.delay_ms(retried)
    return default_backoff_ms(retried + 1)
