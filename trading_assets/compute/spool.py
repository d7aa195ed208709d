"""The Stage 1 client's spool of SQL statements, read with PostgreSQL's own grammar (pglast), never by regex.

Only an `INSERT … VALUES … [ON CONFLICT …]` into one of the Stage 1 tables is replayed. Anything else (DDL,
DELETE, another schema, a SELECT source, several statements in one, a statement cut off at the end of the
file) is refused with the reason. `TO_TIMESTAMP(n)` of epoch milliseconds (the client shipped both units) is
read as seconds; a value that is a sane instant in neither unit is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

import pglast
from pglast import ast, parser

STAGE1_TABLES = frozenset(
    {
        "stage1_datasets",
        "indicator_datasets",
        "walkforward_runs",
        "walkforward_folds",
        "simulation_runs",
        "simulation_trades",
        "simulation_trade_buckets",
    }
)
# Epoch seconds of 1990-01-01 and 2100-01-01: the instants a Stage 1 row can have.
SANE_SECONDS = (631_152_000, 4_102_444_800)


@dataclass(frozen=True)
class SpoolStatement:
    position: int  # 1-based, in the file
    line: int
    text: str  # as it runs (milliseconds rewritten to seconds)
    table: str | None
    refusal: str | None  # why it is not run; None: it is run

    @property
    def sha256(self) -> str:
        """The statement's identity across files: a statement spooled twice is the same statement."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_spool(text: str) -> list[SpoolStatement]:
    """Every statement of a spool file, in order, classified; a statement the file ends inside is the last."""
    pieces, tail = _statement_slices(text)
    statements, line, counted = [], 1, 0
    for position, piece in enumerate([*pieces, *([tail] if tail else [])], start=1):
        start = _code_start(text, piece)
        line += text.count("\n", counted, start)
        counted = start
        statements.append(_classify(position, line, text[start : piece.stop].strip(), cut_off=piece is tail))
    return statements


def _statement_slices(text: str) -> tuple[list[slice], slice | None]:
    """The complete statements (ended by `;`) and what follows the last of them, if it holds any code."""
    try:
        pieces = list(parser.split(text, with_parser=False, only_slices=True))
        scanned = len(text)
    except parser.ParseError as exc:  # an unterminated string or comment: the file ends inside a statement
        scanned = exc.args[1]
        pieces = list(parser.split(text[:scanned], with_parser=False, only_slices=True)) if scanned else []
    end = text.find(";", pieces[-1].stop) + 1 if pieces else 0
    tail = slice(end, len(text))
    has_code = scanned < len(text) or any(
        t.name not in ("SQL_COMMENT", "C_COMMENT") for t in parser.scan(text[end:scanned])
    )
    return pieces, tail if has_code else None


def _code_start(text: str, piece: slice) -> int:
    """Where the statement's code starts: after the comments and blanks before it."""
    try:
        tokens = parser.scan(text[piece])
    except parser.ParseError:
        return piece.start + len(text[piece]) - len(text[piece].lstrip())
    code = next((t for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")), None)
    return piece.start + (code.start if code else 0)


def _classify(position: int, line: int, text: str, cut_off: bool) -> SpoolStatement:
    def refused(reason: str, table: str | None = None) -> SpoolStatement:
        return SpoolStatement(position, line, text, table, reason)

    try:
        parsed = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        if cut_off:
            return refused(f"the file ends inside this statement ({exc}); the rest of it never arrived")
        return refused(f"not valid SQL: {exc}")
    if len(parsed) != 1:
        return refused(f"{len(parsed)} statements in one; each is replayed on its own")
    statement = parsed[0].stmt
    if not isinstance(statement, ast.InsertStmt):
        return refused(f"only INSERT into the Stage 1 tables is replayed; this is {type(statement).__name__}")
    relation = statement.relation
    name = relation.relname
    if relation.schemaname not in (None, "stage1") or name not in STAGE1_TABLES:
        qualified = f"{relation.schemaname}.{name}" if relation.schemaname else name
        return refused(f"INSERT into {qualified}, which is not a Stage 1 table")
    source = statement.selectStmt
    if statement.withClause or statement.returningClause:
        return refused("INSERT with WITH or RETURNING is not replayed", name)
    if source is None or not source.valuesLists or source.fromClause or source.withClause:
        return refused("only INSERT … VALUES is replayed (not a SELECT or DEFAULT VALUES source)", name)
    rewritten, problem = _seconds_timestamps(text)
    if problem:
        return refused(problem, name)
    return SpoolStatement(position, line, rewritten, name, None)


def _seconds_timestamps(text: str) -> tuple[str, str | None]:
    """`text` with every TO_TIMESTAMP(<number>) in epoch seconds, or the reason a number is no sane instant.

    Numbers are found by PostgreSQL's own scanner: the token after `to_timestamp (`.
    """
    tokens = list(parser.scan(text))
    edits = []
    for index in range(len(tokens) - 3):
        name, opening, number, closing = tokens[index : index + 4]
        if text[name.start : name.end + 1].lower() != "to_timestamp" or text[opening.start] != "(":
            continue
        if number.name not in ("ICONST", "FCONST") or text[closing.start] != ")":
            continue
        value = Decimal(text[number.start : number.end + 1])
        low, high = SANE_SECONDS
        if low <= value <= high:
            continue
        if low * 1000 <= value <= high * 1000:
            edits.append((number.start, number.end + 1, str(value / 1000)))
            continue
        return text, (
            f"TO_TIMESTAMP({value}) is no instant between 1990 and 2100 in epoch seconds or milliseconds; "
            "refused rather than stored as 1970 or as a year far ahead"
        )
    for start, end, replacement in reversed(edits):
        text = text[:start] + replacement + text[end:]
    return text, None
