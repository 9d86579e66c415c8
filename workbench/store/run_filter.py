"""The runs filter: a short syntax compiled to a parameterised SQL condition.

    val_accuracy > 0.9 and optimizer = adam and tag:baseline
    (state = failed or state = cancelled) and not experiment:scratch
    name ~ otter and lr <= 1e-3 and hp.optimizer.momentum > 0
    error is not null and batch_size in (64, 128)

Grammar (keywords case-insensitive)::

    expr    := and_ ("or" and_)*
    and_    := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | field ":" value | comparison
    compare := field OP value | field "in" "(" value ("," value)* ")" | field "is" ["not"] "null"
    OP      := = | != | <> | < | <= | > | >= | ~        (~: contains, case-insensitive)
    field   := word ("." word)*        value := number | 'text' | "text" | word

``tag:x`` means the run has tag x; any other ``field:value`` means ``field = value``. Values
never become SQL text: each is a ``?`` parameter; fields are resolved by the caller to SQL
expressions it owns (a column, a hyperparameter path, a metric). Errors raise
:class:`FilterError` with the 0-based character position of the offending token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_FILTER_CHARS = 2000
KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null"})
OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">", "~")

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.-]))
      | (?P<op><=|>=|!=|<>|=|<|>|~)
      | (?P<punct>[(),:])
      | (?P<word>[\w/][\w./-]*)
    """,
    re.VERBOSE,
)


class FilterError(ValueError):
    """A filter that cannot be parsed or resolved; ``position`` is where (0-based)."""

    def __init__(self, message: str, position: int):
        super().__init__(f"filter: {message} (at position {position})")
        self.position = position
        self.reason = message


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, op, punct, word, end
    text: str
    position: int

    @property
    def value(self) -> Any:
        if self.kind == "number":
            return float(self.text)
        if self.kind == "string":
            quote = self.text[0]
            return self.text[1:-1].replace(quote * 2, quote)
        return self.text


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"longer than {MAX_FILTER_CHARS} characters", MAX_FILTER_CHARS)
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] in "'\"":
                raise FilterError(f"unterminated string starting with {text[position]}",
                                  position)
            raise FilterError(f"unexpected character {text[position]!r}", position)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# The syntax tree: plain tuples, so the compiler stays one small function.
#   ("and" | "or", left, right) | ("not", node) | ("cmp", field, op, value_token)
#   ("in", field, [value_tokens]) | ("null", field, negated) | ("tag", value_token)
# where field is (name_parts, position).
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek
        if token.kind == "word" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def expect(self, text: str, what: str) -> Token:
        token = self.peek
        if token.text != text or token.kind == "string":
            raise FilterError(f"expected {what}, found {_describe(token)}", token.position)
        return self.take()

    def parse(self) -> Node:
        if self.peek.kind == "end":
            raise FilterError("empty filter", 0)
        node = self.or_()
        if self.peek.kind != "end":
            # Two words in a row: most often a value with a space that wants quotes.
            hint = (" (quote a value that has spaces: tag:\"two words\")"
                    if self.tokens[self.index - 1].kind == "word" else "")
            raise FilterError(f"expected 'and', 'or' or the end, found "
                              f"{_describe(self.peek)}{hint}", self.peek.position)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.keyword("or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.unary()
        while self.keyword("and"):
            node = ("and", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.keyword("not"):
            return ("not", self.unary())
        if self.peek.text == "(" and self.peek.kind == "punct":
            self.take()
            node = self.or_()
            self.expect(")", "')'")
            return node
        field = self.field()
        token = self.peek
        if token.kind == "punct" and token.text == ":":
            self.take()
            value = self.value()
            if [p.lower() for p in field[0]] == ["tag"]:
                return ("tag", value)
            return ("cmp", field, "=", value)
        if token.kind == "op":
            self.take()
            return ("cmp", field, token.text, self.value())
        if self.keyword("in"):
            self.expect("(", "'(' after 'in'")
            values = [self.value()]
            while self.peek.text == "," and self.peek.kind == "punct":
                self.take()
                values.append(self.value())
            self.expect(")", "')' or ',' in the list")
            return ("in", field, values)
        if self.keyword("is"):
            negated = self.keyword("not")
            if not self.keyword("null"):
                raise FilterError(f"expected 'null', found {_describe(self.peek)}",
                                  self.peek.position)
            return ("null", field, negated)
        raise FilterError(
            f"expected an operator ({' '.join(OPERATORS)}, ':', 'in', 'is') after "
            f"'{'.'.join(field[0])}', found {_describe(token)}", token.position)

    def field(self) -> tuple[list[str], int]:
        token = self.peek
        if token.kind != "word" or token.text.lower() in KEYWORDS:
            raise FilterError(f"expected a column name, found {_describe(token)}",
                              token.position)
        self.take()
        parts = token.text.split(".")
        if any(not p for p in parts):
            raise FilterError(f"bad column name {token.text!r}", token.position)
        return parts, token.position

    def value(self) -> Token:
        token = self.peek
        if token.kind in ("string", "number") or (
                token.kind == "word" and token.text.lower() not in KEYWORDS - {"null"}):
            return self.take()
        raise FilterError(f"expected a value, found {_describe(token)}", token.position)


def _describe(token: Token) -> str:
    return "the end of the filter" if token.kind == "end" else repr(token.text)


def parse(text: str) -> Node:
    """The syntax tree of a filter (FilterError with a position if it is not one)."""
    return _Parser(text).parse()


# A resolver maps (field parts, position) to (SQL expression, its parameters, kind), kind
# being "number", "text", "list" (tags) or "time"; it raises FilterError for unknown fields.
Resolver = Callable[[list[str], int], tuple[str, list[Any], str]]

_SQL_OPS = {"=": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def compile_filter(text: str, resolve: Resolver) -> tuple[str, list[Any]]:
    """``text`` as a SQL condition with ``?`` placeholders, and the parameters in order."""
    return _compile(parse(text), resolve)


def _compile(node: Node, resolve: Resolver) -> tuple[str, list[Any]]:
    kind = node[0]
    if kind in ("and", "or"):
        left, lp = _compile(node[1], resolve)
        right, rp = _compile(node[2], resolve)
        return f"({left} {kind.upper()} {right})", lp + rp
    if kind == "not":
        inner, params = _compile(node[1], resolve)
        return f"(NOT coalesce({inner}, false))", params
    if kind == "tag":
        expr, params, _ = resolve(["tags"], node[1].position)
        return f"list_contains({expr}, ?)", [*params, str(node[1].value)]
    parts, position = node[1]
    expr, params, column_kind = resolve(parts, position)
    if kind == "null":
        return f"({expr} IS {'NOT ' if node[2] else ''}NULL)", params
    if kind == "in":
        typed = [_typed(expr, column_kind, v) for v in node[2]]
        sql_expr = typed[0][0]
        return (f"({sql_expr} IN ({', '.join('?' for _ in typed)}))",
                params + [value for _, value in typed])
    op, token = node[2], node[3]
    if column_kind == "list":
        if op not in ("=", "!=", "<>", "~"):
            raise FilterError(f"'{'.'.join(parts)}' is a list of tags: use ':', '=', '!=' "
                              "or '~'", token.position)
        if op == "~":
            return (f"len(list_filter({expr}, lambda t: contains(lower(t), lower(?)))) > 0",
                    [*params, str(token.value)])
        test = f"list_contains({expr}, ?)"
        return (test if op == "=" else f"(NOT {test})"), [*params, str(token.value)]
    if op == "~":
        return (f"contains(lower(CAST({expr} AS VARCHAR)), lower(?))",
                [*params, str(token.value)])
    sql_expr, value = _typed(expr, column_kind, token)
    return f"({sql_expr} {_SQL_OPS[op]} ?)", [*params, value]


def _typed(expr: str, column_kind: str, token: Token) -> tuple[str, Any]:
    """The expression and value cast so they compare: numbers as DOUBLE, else text."""
    if column_kind == "number" or (column_kind == "any" and token.kind == "number"):
        if token.kind != "number":
            try:
                return f"TRY_CAST({expr} AS DOUBLE)", float(token.text)
            except ValueError:
                raise FilterError(f"expected a number, found {token.text!r}",
                                  token.position) from None
        return f"TRY_CAST({expr} AS DOUBLE)", token.value
    if column_kind == "bool" and token.kind == "word" and token.text.lower() in ("true",
                                                                                "false"):
        return f"CAST({expr} AS BOOLEAN)", token.text.lower() == "true"
    return f"CAST({expr} AS VARCHAR)", token.text if token.kind == "number" else str(token.value)
