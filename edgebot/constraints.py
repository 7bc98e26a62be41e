"""Open Horizon's policy constraint language, as the agbot reads and evaluates it (pure, no I/O).

Source of every rule below: open-horizon/anax (commit 2f3fa5a, July 2026):
``externalpolicy/text_language/text_language.go`` (lexer, ``Validate``, ``GetNextExpression``, ``GetNextOperator``,
``validOpValuePair``), ``externalpolicy/constraint_expression.go`` (``parseConstraintExpression``: OR of ANDs,
parentheses as sub-expressions, the constraints of a list ANDed), ``externalpolicy/counter_party_properties.go``
(``propertyInArray``: how one clause meets one property), ``externalpolicy/property_list.go`` (property types) and
``semanticversion/version.go`` (version ranges). No Go code is copied; this is the same behaviour written in Python.

What that means in practice (all of it deliberate, because the agbot does it):

* Operators: ``AND``/``&&``, ``OR``/``||`` (surrounded by whitespace), parentheses, ``==``/``=``/``!=``,
  ``<``/``>``/``<=``/``>=`` (the lexer also takes ``=<``, ``=>``, ``=>=``, ``=<=``, which compare as ``==`` on a
  number and never hold on a string), ``in`` with a quoted list or a version range. AND binds tighter than OR.
  There is **no NOT**: anax's documentation says so and its lexer reads ``NOT`` as a property name, so a policy
  using it is refused by the agbot; here it raises :class:`ConstraintError`.
* A clause on a property the other side does not have is false (also for ``!=``).
* Numbers (JSON numbers) compare numerically with ``==``/``!=``/``<``/...; a number never equals a quoted value.
  Booleans take ``==``/``=``/``!=`` against Go's ParseBool spellings (``true``, ``1``, ``T`` ...). Strings take
  ``==``/``=``/``!=``/``in`` only (``"3" > 2`` is false for a string ``"3"``); ``==`` also holds when the
  property's value is a comma-separated list containing the value; ``in "a,b"`` holds when the value is in the list;
  a ``version``-typed property (or a version-looking value against a range) is compared by version precedence.
* Lexer quirks are kept: the lexer takes the first token kind that matches, not the longest, so ``xyz!=abc``
  (no space) is the property ``xyz!`` equal to ``abc``; ``colorin"a,b"`` is ``color in "a,b"``; a constraint that
  starts with whitespace before a property name gives that name a leading space, and it then matches no property.

Anything the agbot would refuse raises :class:`ConstraintError` at compile time, naming the expression, the
position and anax's reason: a rollout must halt on it, never guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConstraintError", "Constraints", "compile_constraints", "compatible", "satisfies"]

STRING, VERSION, BOOLEAN, INTEGER, FLOAT, LIST = "string", "version", "boolean", "int", "float", "list of strings"


class ConstraintError(ValueError):
    """A constraint the agbot cannot read: the expression, the character position and anax's reason."""

    def __init__(self, expression: str, position: int, reason: str) -> None:
        self.expression, self.position, self.reason = expression, position, reason
        rest = expression[position:position + 30]
        hint = ""
        if re.search(r"(^|[\s(])(NOT\s|!\()", expression):
            hint = " (Open Horizon's constraint language has no NOT)"
        super().__init__(f"cannot read constraint {expression!r} at position {position} ({rest!r}): "
                         f"{reason}{hint}")


class _Fail(Exception):
    """A step of the reader failed at ``position`` with anax's message (wrapped into ConstraintError)."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position, self.reason = position, reason


# -- the lexer: anax's EBNF token grammar, matched the way participle v0.7.1 matches it -----------------------------
# Token kinds are tried in the order the grammar declares them and the first that matches wins (not the longest).
# Inside a kind, matching is greedy and never backtracks; a multi-character literal that fails half-way has consumed
# what it read (the one place this shows is a name starting with "ini", see _token).
class _Cursor:
    __slots__ = ("text", "pos", "out")

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos
        self.out: list[str] = []


_Rule = Callable[[_Cursor], bool]


def _chars(test: Callable[[str], bool]) -> _Rule:
    def rule(c: _Cursor) -> bool:
        if c.pos < len(c.text) and test(c.text[c.pos]):
            c.out.append(c.text[c.pos])
            c.pos += 1
            return True
        return False
    return rule


def _lit(word: str) -> _Rule:
    if len(word) == 1:
        return _chars(lambda ch: ch == word)

    def rule(c: _Cursor) -> bool:
        if c.pos >= len(c.text) or c.text[c.pos] != word[0]:
            return False
        for want in word:
            if c.pos >= len(c.text):
                return False
            got = c.text[c.pos]
            c.pos += 1  # read, even when it does not match
            if got != want:
                return False
            c.out.append(got)
        return True
    return rule


def _seq(*rules: _Rule) -> _Rule:
    return lambda c: all(r(c) for r in rules)


def _alt(*rules: _Rule) -> _Rule:
    return lambda c: any(r(c) for r in rules)


def _rep(rule: _Rule) -> _Rule:
    def rep(c: _Cursor) -> bool:
        while rule(c):
            pass
        return True
    return rep


def _opt(rule: _Rule) -> _Rule:
    def opt(c: _Cursor) -> bool:
        rule(c)
        return True
    return opt


_ALPHA_RANGES = ((0x4E00, 0x9FFF), (0x00A0, 0x00FF), (0x3040, 0x309F), (0x1100, 0x11FF), (0xAC00, 0xD7AF),
                 (0x30A0, 0x30FF), (0xFF00, 0xFFEF), (0x20A0, 0x20CF))


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_alnum(ch: str) -> bool:
    if "0" <= ch <= "9" or "a" <= ch <= "z" or "A" <= ch <= "Z":
        return True
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _ALPHA_RANGES)


def _is_strch(ch: str) -> bool:
    return _is_alnum(ch) or ch in "_-/!?+~'."


_WS = _chars(lambda ch: ch in "\n\r\t ")
_WSS = _rep(_WS)
_DIGIT = _chars(_is_digit)
_STRCH = _chars(_is_strch)
_VERS = _seq(_rep(_DIGIT), _lit("."), _rep(_DIGIT), _lit("."), _rep(_DIGIT))
_QCH = _chars(lambda ch: _is_alnum(ch) or ch in "_-/!?+~.' \t")
_LCH = _chars(lambda ch: _is_alnum(ch) or ch in "_-/!?+~.',\t ")

_TOKENS: tuple[tuple[str, _Rule], ...] = (
    ("InStr", _seq(_lit("in"), _rep(_lit("in")), _STRCH, _rep(_STRCH))),
    ("AndOp", _seq(_WS, _WSS, _alt(_lit("AND"), _lit("&&")), _WS, _WSS)),
    ("OrOp", _seq(_WS, _WSS, _alt(_lit("OR"), _lit("||")), _WS, _WSS)),
    ("OpComp", _seq(_WSS, _opt(_lit("=")), _chars(lambda ch: ch in "><"), _opt(_lit("=")), _WSS)),
    ("OpIn", _seq(_WSS, _lit("in"), _WSS)),
    ("OpEq", _seq(_WSS, _alt(_lit("!="), _seq(_lit("="), _opt(_lit("=")))), _WSS)),
    ("VersRange", _seq(_WSS, _chars(lambda ch: ch in "(["), _VERS, _WSS, _lit(","), _WSS,
                       _alt(_VERS, _lit("INFINITY")), _chars(lambda ch: ch in "])"))),
    ("Vers", _seq(_WSS, _VERS)),
    ("Num", _seq(_WSS, _opt(_lit("-")), _DIGIT, _rep(_DIGIT), _opt(_seq(_lit("."), _rep(_DIGIT))))),
    ("OpenParen", _seq(_WSS, _lit("("), _WSS)),
    ("CloseParen", _seq(_WSS, _lit(")"))),
    ("Str", _seq(_WSS, _STRCH, _rep(_STRCH))),
    ("QuoteStr", _seq(_WSS, _lit('"'), _QCH, _rep(_QCH), _lit('"'))),
    ("ListStr", _seq(_WSS, _lit('"'), _LCH, _rep(_LCH), _lit('"'))),
    ("Unused", _DIGIT),
)


@dataclass(frozen=True)
class _Token:
    kind: str
    value: str
    start: int
    end: int


def _token(text: str, pos: int) -> _Token:
    if pos >= len(text):
        return _Token("EOF", "", pos, pos)
    for kind, rule in _TOKENS:
        cursor = _Cursor(text, pos)
        if rule(cursor):
            value = "".join(cursor.out)
            if value != text[pos:cursor.pos]:
                # anax's lexer drops a character here (e.g. a name like "initial" reads as "iniial"); the agbot
                # then fails to find the operator that follows and refuses the policy.
                raise _Fail(pos, f"No control operator found. Expecting one of AND,&&,OR,||. Found: {text[pos:]} "
                                 f"(anax's lexer misreads {text[pos:cursor.pos]!r} as {value!r})")
            return _Token(kind, value, pos, cursor.pos)
    raise _Fail(pos, f"no match found for {text[pos]}")


# -- anax's reader: one clause, then one operator, over the rest of the text ------------------------------------------
_VALUE_KINDS = {"Str", "InStr", "QuoteStr", "ListStr", "Vers", "VersRange", "Num"}


@dataclass(frozen=True)
class _Clause:
    name: str  # as anax keeps it: a leading space (start of a constraint) is part of it
    op: str
    value: str
    position: int


def _next_clause(text: str, pos: int) -> tuple[_Clause | None, int]:
    """A clause at ``pos`` (None before a parenthesis or at the end) and where the text goes on."""
    if not text[pos:].strip():
        return None, len(text)
    first = _token(text, pos)
    if first.kind in ("OpenParen", "CloseParen"):
        return None, pos
    if first.kind not in ("Str", "InStr"):
        raise _Fail(pos, f"Next expression not found: {text[pos:]}")
    name = first.value
    try:
        second = _token(text, first.end)
    except _Fail as exc:
        raise _Fail(exc.position, f"Unrecognized token found: {exc.reason}") from None
    if second.kind in ("OpEq", "OpComp", "OpIn"):
        op, op_kind = second.value, second.kind
        try:
            value_token = _token(text, second.end)
        except _Fail as exc:
            raise _Fail(exc.position, f"Unrecognized token found: {exc.reason}") from None
    elif len(name.encode()) > 3 and name.endswith("in"):
        # "colorin\"a,b\"": the lexer swallowed the operator into the name
        name, op, op_kind, value_token = name[:-2], "in", "", second
    else:
        raise _Fail(second.start, f'Non-operator token proceeding property name token. "{name}{second.value}"')
    if value_token.kind not in _VALUE_KINDS:
        raise _Fail(value_token.start, f"Invalid property value. {name}{op}{value_token.value}")
    _check_op_value(op, op_kind, value_token)
    return _Clause(name, op.strip(), value_token.value.strip(), pos), value_token.end


def _check_op_value(op: str, op_kind: str, value: _Token) -> None:
    """Which operator goes with which kind of value (anax's validOpValuePair)."""
    if op_kind == "OpEq":
        if value.kind == "VersRange":
            raise _Fail(value.start, "Version range can only use operator 'in'.")
        if value.kind == "ListStr":
            raise _Fail(value.start, "Property type list of strings can only use operator 'in'.")
    if op_kind == "OpComp" and _go_float(value.value) is None:
        raise _Fail(value.start, f"Cannot use numerical comparison operator {op} with value {value.value}.")
    if op_kind == "OpIn":
        if value.kind not in ("ListStr", "QuoteStr", "VersRange", "Vers"):
            raise _Fail(value.start, "The 'in' operator can only be used for types version and list of strings")
        if value.kind == "VersRange":
            found = _version_range(value.value)
            if isinstance(found, str):
                raise _Fail(value.start, found)


def _next_operator(text: str, pos: int) -> tuple[str, int]:
    """``AND``/``&&``/``OR``/``||``/``(``, or ``)`` for a closing parenthesis and for the end; "" when only
    whitespace is left."""
    if not text[pos:].strip():
        return "", len(text)
    token = _token(text, pos)
    if token.kind in ("CloseParen", "EOF"):
        return ")", token.end
    if token.kind in ("AndOp", "OrOp", "OpenParen"):
        return token.value.strip(), token.end
    raise _Fail(pos, f"No control operator found. Expecting one of AND,&&,OR,||. Found: {text[pos:]}")


def _validate(text: str) -> None:
    """anax's acceptance test of one constraint (what hzn and the agbot refuse)."""
    pos, depth = 0, 0
    while pos < len(text):
        try:
            clause, pos = _next_clause(text, pos)
        except _Fail as exc:
            raise ConstraintError(text, exc.position, exc.reason) from None
        while True:
            try:
                op, pos = _next_operator(text, pos)
            except _Fail as exc:
                if clause is not None:
                    raise ConstraintError(text, exc.position, exc.reason) from None
                op = ""  # anax ignores it here; the next clause read fails instead
            if op == ")":
                depth -= 1
            elif op == "(":
                depth += 1
            else:
                break
    if depth != 0:
        raise ConstraintError(text, len(text), "The constraint expression contains unmatched parentheses.")


Node = tuple[str, list[Any]]  # ("and" | "or", children), a child being a Node or a _Clause


def _parse(text: str, pos: int) -> tuple[Node, int]:
    """OR of ANDs; a parenthesis opens a sub-expression, ``)`` or the end closes it."""
    ands: list[Any] = []
    ors: list[Any] = []
    while True:
        clause, pos = _next_clause(text, pos)
        if clause is not None:
            ands.append(clause)
        op, pos = _next_operator(text, pos)
        if op == "(":
            sub, pos = _parse(text, pos)
            ands.append(sub)
            op, pos = _next_operator(text, pos)
        if op in ("||", "OR"):
            ors.append(("and", ands))
            ands = []
        elif op in (")", ""):
            ors.append(("and", ands))
            return ("or", ors), pos


# -- values as anax reads them ----------------------------------------------------------------------------------------
_GO_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)
_GO_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+")


def _go_float(text: str) -> float | None:
    """Go's strconv.ParseFloat(text, 64), or None where it returns an error (also for out-of-range values)."""
    if _GO_FLOAT.fullmatch(text):
        value = float(text)
    elif _GO_HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text)
    else:
        return None
    if value in (float("inf"), float("-inf")) and "inf" not in text.lower():
        return None
    return value


_GO_TRUE, _GO_FALSE = {"1", "t", "T", "TRUE", "true", "True"}, {"0", "f", "F", "FALSE", "false", "False"}


def _go_bool(text: str) -> bool | None:
    return True if text in _GO_TRUE else False if text in _GO_FALSE else None


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == '"' and value[-1] == '"' else value


def _in_list(value: str, listed: str) -> bool:
    """``value`` equals one of the comma-separated ``listed`` (each trimmed of spaces and quotes)."""
    value = _unquote(value.strip(" "))
    return any(_unquote(item.strip(" ")) == value for item in listed.split(","))


def _any_in_list(values: str, listed: str) -> bool:
    return any(_in_list(_unquote(item.strip(" ")), listed) for item in values.split(","))


# -- versions (semanticversion) ----------------------------------------------------------------------------------------
_INF = "INFINITY"


def _is_version(text: str) -> bool:
    if not text:
        return False
    if text == _INF:
        return True
    core, _, pre = text.partition("-")
    nums = core.split(".")
    if len(nums) > 3 or any(not n or not n.isascii() or not n.isdigit() for n in nums):
        return False
    return all(ch.lower() in "0123456789abcdefghijklmnopqrstuvwxyz-." for ch in pre)


def _is_version_range(text: str) -> bool:
    if not text or (text[0] not in "([" and text[-1] not in ")]"):
        return False
    parts = text.split(",")
    return len(parts) == 2 and bool(parts[0]) and bool(parts[1]) and _is_version(parts[0][1:]) \
        and _is_version(parts[1][:-1])


def _normalize(version: str) -> str:
    if version == _INF:
        return version
    core, sep, pre = version.partition("-")
    nums = core.split(".")
    return ".".join(nums + ["0"] * (3 - len(nums))) + (sep + pre if pre else "")


def _atoi(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[+-]?\d{1,18}", text) else None


def _compare_prereleases(a: str, b: str) -> int:
    if a == b:
        return 0
    if not a:
        return 1
    if not b:
        return -1
    left, right = a.split("."), b.split(".")
    for i, x in enumerate(left):
        if len(right) < i + 1:
            return 1
        y = right[i]
        if x == y:
            continue
        nx, ny = _atoi(x), _atoi(y)
        if nx is not None and ny is not None:
            if nx != ny:
                return -1 if nx < ny else 1
        elif nx is not None:
            return -1
        elif ny is not None:
            return 1
        else:
            return -1 if x < y else 1
    return -1 if len(left) < len(right) else 0


def _compare_versions(a: str, b: str) -> int | None:
    if not _is_version(a) or not _is_version(b):
        return None
    if a == b:
        return 0
    if a == _INF:
        return 1
    if b == _INF:
        return -1
    (ca, _, pa), (cb, _, pb) = _normalize(a).partition("-"), _normalize(b).partition("-")
    for x, y in zip(ca.split("."), cb.split("."), strict=False):
        if x != y:
            nx, ny = _atoi(x) or 0, _atoi(y) or 0
            if nx != ny:
                return -1 if nx < ny else 1
    return _compare_prereleases(pa, pb)


@dataclass(frozen=True)
class _Range:
    start: str
    start_inclusive: bool
    end: str
    end_inclusive: bool

    def contains(self, version: str) -> bool:
        if not _is_version(version):
            return False
        v = _normalize(version)
        if (v == self.start and self.start_inclusive) or (v == self.end and self.end_inclusive):
            return True
        if v in (self.start, self.end):
            return False
        low = _compare_versions(self.start, v)
        if low is None or low > 0:
            return False
        if self.end == _INF:
            return True
        high = _compare_versions(self.end, v)
        return high is not None and high >= 0


def _version_range(text: str) -> _Range | str:
    """A version range (a single version ``v`` means ``[v,INFINITY)``), or anax's reason why it is not one."""
    if not text:
        return "Version_Expression: Empty string is not a valid version."
    if " " in text:
        return f"Version_Expression: Whitespace is not permitted in {text}."
    expr = text
    if text[0] not in "([" and "," not in text and text[-1] not in ")]":
        if not _is_version(text):
            return f"Version_Expression: {text} is not a valid version string."
        expr = f"[{text},{_INF})"
    if expr[0] not in "([":
        return f"Version_Expression: {text} does not begin with an inclusion or exclusion directive."
    if expr[-1] not in ")]":
        return f"Version_Expression: {text} does not end with an inclusion or exclusion directive."
    parts = expr[1:-1].split(",")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return f"Version_Expression: Incorrect number of versions in expression: {expr}."
    for part in parts:
        if not _is_version(part):
            return f"Version_Expression: {part} is not a valid version string."
    return _Range(_normalize(parts[0]), expr[0] == "[", _normalize(parts[1]), expr[-1] == "]")


def version_range_problem(text: str) -> str:
    """Why anax (``semanticversion/version.go``) would not read ``text`` as a version range; "" when it would."""
    found = _version_range(text)
    return found if isinstance(found, str) else ""


def version_in_range(version: str, text: str) -> bool:
    """Is ``version`` inside the range ``text`` (a bare version ``v`` means ``[v,INFINITY)``)? False for a range
    anax cannot read."""
    found = _version_range(text)
    return not isinstance(found, str) and found.contains(version)


# -- one clause against the properties ---------------------------------------------------------------------------------
Prop = tuple[Any, str]  # (value as the Exchange stores it, declared type or "")
Lookup = Callable[[str], Sequence[Prop]]
_STRING_OPS = {"==", "=", "!=", "in"}
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
    "!=": lambda a, b: a != b}


def _compile_clause(clause: _Clause) -> Callable[[Lookup], bool]:
    name, op, raw = clause.name, clause.op, clause.value
    number = _go_float(raw)
    numeric = _NUMERIC_OPS.get(op, lambda a, b: a == b)  # every other operator (==, in, =>, ...) is equality
    boolean = _go_bool(raw)
    wanted = _unquote(raw).strip(" ")
    as_range = _version_range(wanted)
    wanted_is_range = _is_version_range(wanted)

    def decide(value: Any, declared: str) -> bool | None:
        """True/False when this property decides the clause; None when anax looks on to the next one."""
        if isinstance(value, bool):
            if op not in _STRING_OPS or boolean is None:
                return False
            if op == "!=":
                return value != boolean
            return value == boolean if op in ("==", "=") else None
        if isinstance(value, (int, float)):
            return number is not None and numeric(float(value), number)
        if isinstance(value, str):
            have = _unquote(value).strip(" ")
            if op not in _STRING_OPS:
                return False
            if op == "!=":
                return not _in_list(wanted, have) if declared == LIST else have != wanted
            if op == "in":
                if declared == VERSION or (_is_version(have) and wanted_is_range):
                    return not isinstance(as_range, str) and as_range.contains(have)
                return _any_in_list(have, wanted) if declared == LIST else _in_list(have, wanted)
            return _in_list(wanted, have) or have == wanted
        return None

    def holds(lookup: Lookup) -> bool:
        for value, declared in lookup(name):
            decided = decide(value, declared)
            if decided is not None:
                return decided
        return False

    return holds


def _compile_node(node: Node) -> Callable[[Lookup], bool]:
    kind, children = node
    parts = [_compile_node(c) if isinstance(c, tuple) else _compile_clause(c) for c in children]
    if len(parts) == 1:
        return parts[0]
    if kind == "and":
        return lambda lookup: all(p(lookup) for p in parts)
    return lambda lookup: any(p(lookup) for p in parts)


# -- the public face ---------------------------------------------------------------------------------------------------
Properties = Iterable[Mapping[str, Any]] | Mapping[str, Any]
_NUMBER_TEXT = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _typed(text: Any) -> Any:
    """A value from a name → text map (types lost): "true"/"false" as booleans, numbers as numbers."""
    if not isinstance(text, str):
        return text
    if text in ("true", "false"):
        return text == "true"
    return float(text) if _NUMBER_TEXT.fullmatch(text) else text


def _lookup(properties: Properties) -> Lookup:
    if isinstance(properties, Mapping):
        return lambda name: ((_typed(properties[name]), ""),) if name in properties else ()
    by_name: dict[str, list[Prop]] = {}
    for prop in properties:
        by_name.setdefault(str(prop.get("name")), []).append((prop.get("value"), str(prop.get("type") or "")))
    return lambda name: by_name.get(name, ())


class Constraints:
    """A policy's ``constraints`` (a list of strings, all of which must hold), read once; call it per node."""

    def __init__(self, constraints: Iterable[str]) -> None:
        if isinstance(constraints, str):
            raise ConstraintError(constraints, 0, "The constraint expression is a string, but is expected to be "
                                                  "an array of strings")
        self.texts = tuple(constraints)
        trees = []
        for text in self.texts:
            if not isinstance(text, str):
                raise ConstraintError(repr(text), 0, f"The constraint expression: {text!r} is type "
                                                     f"{type(text).__name__}, but is expected to be a string")
            _validate(text)
            try:
                tree, _ = _parse(text.replace("\a", " "), 0)
            except _Fail as exc:
                raise ConstraintError(text, exc.position, exc.reason) from None
            trees.append(_compile_node(tree))
        self._parts = trees

    def __call__(self, properties: Properties) -> bool:
        """Whether these properties satisfy every constraint.

        ``properties`` as the Exchange stores them (``[{"name", "value", "type"?}]``: exact), or a name → value
        map; a map's string values ``"true"``/``"false"`` and numbers are read as booleans and numbers (the
        Exchange's types are lost in such a map)."""
        if not self._parts:
            return True
        lookup = _lookup(properties)
        return all(part(lookup) for part in self._parts)

    def __repr__(self) -> str:
        return f"Constraints({list(self.texts)!r})"


def compile_constraints(constraints: Iterable[str]) -> Constraints:
    """Read a constraint list once (raises :class:`ConstraintError` on what the agbot would refuse)."""
    return Constraints(constraints)


def satisfies(constraints: Iterable[str] | Constraints, properties: Properties) -> bool:
    compiled = constraints if isinstance(constraints, Constraints) else Constraints(constraints)
    return compiled(properties)


def compatible(policy_constraints: Iterable[str] | Constraints, policy_properties: Properties,
               node_constraints: Iterable[str] | Constraints, node_properties: Properties) -> bool:
    """Both directions, as the agbot checks them: the deployment policy's constraints against the node's properties,
    and the node's constraints against the policy's properties. For the agbot's full check pass the deployment
    policy's constraints and properties merged with the service policy's (constraints: both lists; properties:
    both lists)."""
    return satisfies(policy_constraints, node_properties) and satisfies(node_constraints, policy_properties)
