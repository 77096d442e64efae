"""Full-text search over tickets: the index, the query language and the hits (printed by
`postdesk.ticket_commands` as a table, CSV, TSV or JSON).

What is searched: every message on a ticket (inbound, our replies, automatic mail), its
subject and its visible text (the new text without quoted history and signature;
messages stored before postdesk computed that are searched by their whole text). A
ticket is found when one of its messages holds every word of the query (as mail clients
search: words spread over several messages of a long thread do not make a hit), and
ranked by its best message: bm25 on SQLite, ts_rank on PostgreSQL, a word in the subject
counting more than one in the text. A merged ticket's messages moved to the ticket it
was merged into, so they are found there.

The index is the database's own: an FTS5 table on SQLite, a table of `tsvector`s with a
GIN index on PostgreSQL ('simple' configuration: no stemming, which Persian lacks anyway).
It holds one row per message and is kept by triggers on `messages` (insert, a change of
subject or text, delete), so every writer, present and future, the mail pipeline, the
outbox, imports or plain SQL (on SQLite only through postdesk's connections, see
below), keeps it in step in its own transaction; moving messages on a merge changes
nothing in it (the row follows the message). Migration 0009 creates it and indexes the
messages already stored.

Persian: the triggers fold text with the table of lexicon/persian.py (the one ingest's
`normalize_persian` uses), and queries are folded with it in Python: Arabic ي/ك and
Persian ی/ک, Persian and Arabic-Indic digits and ASCII digits all match. Words written
with a zero-width non-joiner are indexed both joined and split, so "می‌خواهم" (ZWNJ) is
found by "میخواهم" and by "می خواهم"; a query word with a ZWNJ finds all three
spellings. The verb prefix (می, نمی) and the plural suffix (ها, های…) are also written
joined or with a space: a query word or pair with one is searched in both spellings, so
"میخواهم", "می خواهم" and "می‌خواهم" find each other, as do "کتابها", "کتاب ها" and
"کتاب‌ها". Other words written apart and together ("کتابخانه", "کتاب خانه") do not:
nothing says where a word would split.

Where the triggers fold: on PostgreSQL in SQL (nested replace() calls, `indexed_rows`).
On SQLite they did too until migration 0014; now they call `postdesk_fold`, a Python
function postdesk registers on every connection it opens (models/db.py,
`lexicon.persian.index_text`): the same text byte for byte, and about 40 us less per
message filed than 56 replace() calls on texts of a few hundred characters (more on
longer ones). The price: a program that has not registered it (the sqlite3 shell, a
script with a connection of its own) still reads the database, searches the index and
deletes messages, but its INSERT or UPDATE of a message fails whole with "no such
function: postdesk_fold", so it cannot leave the index behind either. (Nothing in
plain SQL folds as fast: SQLite has no translate(); and a trigger cannot fall back to
SQL where the function is missing, since SQLite resolves functions when it prepares a
statement, every trigger's included, even in a CASE branch never taken.)

A later migration that rebuilds `messages` with Alembic's batch mode on SQLite drops the
triggers with the old table: it must call `create_index` again (which also re-indexes,
and makes the triggers as 0014 left them).

Queries: words, all of which must appear, and "quoted phrases"; case does not matter.
Every word reaches the database as a quoted string (FTS5) or a bound parameter
(PostgreSQL), so no input can make a syntax error or change the statement.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.orm import Session

from postdesk.errors import PostdeskError
from postdesk.lexicon.persian import FOLDING, ZERO_WIDTH_NON_JOINER
from postdesk.models import Message, Ticket
from postdesk.models.base import table_of
from postdesk.models.db import FOLD_FUNCTION, Database

# The index table (and, on SQLite, FTS5's own tables behind it), created by migration
# 0009 and not part of the models: comparing the schema with the models leaves them out.
INDEX_TABLE: Final = "message_search"
_FTS5_PARTS: Final = ("data", "idx", "content", "docsize", "config")
INDEX_TABLES: Final = frozenset([INDEX_TABLE, *(f"{INDEX_TABLE}_{part}" for part in _FTS5_PARTS)])
MAX_QUERY: Final = 500  # characters
MAX_TERMS: Final = 16
MAX_LIMIT: Final = 1000
SNIPPET: Final = 80  # characters of text around the first hit

_SUBJECT_WEIGHT: Final = 3.0  # SQLite bm25 column weights: subject, body


class SearchError(PostdeskError):
    """A query that cannot be searched for (empty, too long): said in one line."""


def in_models(name: str | None, kind: str, _parents: MutableMapping[Any, str | None]) -> bool:
    """Alembic's `include_name` hook: False for the index's tables, which are no model's,
    so comparing (and autogenerating) the schema leaves them alone."""
    return kind != "table" or name not in INDEX_TABLES


# --- folding, in Python and in SQL ------------------------------------------------------

_FOLD: Final = str.maketrans({char: folded or None for char, folded in FOLDING.items()})


def fold(value: str) -> str:
    """`value` as the index holds it: Persian spelling folded (lexicon/persian.py), ZWNJ
    removed. Case is left to the database's tokenizer, which folds it on both sides."""
    return value.translate(_FOLD)


def _char(dialect: str, char: str) -> str:
    return f"{'chr' if dialect == 'postgresql' else 'char'}({ord(char)})"


def fold_sql(expr: str, dialect: str, items: Sequence[tuple[str, str]] | None = None) -> str:
    """SQL applying `fold` (or only the folding `items`) to the text expression `expr`:
    nested replace() calls, which both databases have; characters are written by code
    point, so the invisible ones show."""
    for char, folded in FOLDING.items() if items is None else items:
        if not folded:
            replacement = "''"
        elif folded.isascii():
            replacement = f"'{folded}'"  # digits
        else:
            replacement = _char(dialect, folded)
        expr = f"replace({expr}, {_char(dialect, char)}, {replacement})"
    return expr


# SQLite's parser refuses more than a few dozen levels of nesting, so the folding is
# done a few characters per level of subquery.
_CHUNK: Final = 12


def _both_spellings(expr: str, dialect: str) -> str:
    """`expr`, and where it has a ZWNJ, a copy after it with each ZWNJ made a space:
    folded, the first copy has such words joined and the second split, so both spellings
    are found."""
    position = "strpos" if dialect == "postgresql" else "instr"
    zwnj = _char(dialect, ZERO_WIDTH_NON_JOINER)
    return (
        f"(CASE WHEN {position}({expr}, {zwnj}) > 0 "
        f"THEN {expr} || ' ' || replace({expr}, {zwnj}, ' ') ELSE {expr} END)"
    )


def _fold_call(expr: str) -> str:
    """SQLite: `expr` as the index holds it, computed by the function postdesk registers
    on its connections (`postdesk.lexicon.persian.index_text`, which takes and gives the
    UTF-8 bytes): what the SQL of `indexed_rows` computes, byte for byte, ~40 us less
    per message (two texts of a few hundred characters)."""
    return f"CAST({FOLD_FUNCTION}(CAST({expr} AS BLOB)) AS TEXT)"


def indexed_rows(row: str, dialect: str, source: str = "", *, fold_function: bool = False) -> str:
    """A SELECT of (id, subject, body) as the index holds them, for the message `row`
    (NEW in a trigger, or a table alias that the FROM clause `source` names): folded in
    SQL, or on SQLite with `fold_function` by the `postdesk_fold` function."""
    subject_text = f"coalesce({row}.subject, '')"
    body_text = f"coalesce({row}.visible_text, {row}.text, '')"
    if fold_function:
        subject, body = _fold_call(subject_text), _fold_call(body_text)
        return f"SELECT {row}.id AS id, {subject} AS subject, {body} AS body {source}".strip()
    subject = _both_spellings(subject_text, dialect)
    body = _both_spellings(body_text, dialect)
    sql = f"SELECT {row}.id AS id, {subject} AS subject, {body} AS body {source}".strip()
    items = list(FOLDING.items())
    for level, start in enumerate(range(0, len(items), _CHUNK)):
        chunk = items[start : start + _CHUNK]
        sql = (
            f"SELECT id, {fold_sql('subject', dialect, chunk)} AS subject, "
            f"{fold_sql('body', dialect, chunk)} AS body FROM ({sql}) AS fold{level}"
        )
    return sql


# --- the index: created by migration 0009 -----------------------------------------------


def _sqlite_add(row: str, fold_function: bool, source: str = "") -> str:
    """The INSERT into the index of the message `row` (NEW, or an alias `source` names)."""
    if fold_function:
        return f"INSERT INTO {INDEX_TABLE} (rowid, subject, body) " + indexed_rows(
            row, "sqlite", source, fold_function=True
        )
    return (
        f"INSERT INTO {INDEX_TABLE} (rowid, subject, body) "
        f"SELECT id, subject, body FROM ({indexed_rows(row, 'sqlite', source)})"
    )


def _sqlite_triggers(fold_function: bool) -> list[str]:
    remove = f"DELETE FROM {INDEX_TABLE} WHERE rowid = old.id;"
    add = _sqlite_add("new", fold_function)
    return [
        f"CREATE TRIGGER {INDEX_TABLE}_insert AFTER INSERT ON messages BEGIN {add}; END",
        f"CREATE TRIGGER {INDEX_TABLE}_update AFTER UPDATE OF subject, visible_text, text "
        f"ON messages BEGIN {remove} {add}; END",
        f"CREATE TRIGGER {INDEX_TABLE}_delete AFTER DELETE ON messages BEGIN {remove} END",
    ]


def _sqlite_index(fold_function: bool) -> list[str]:
    return [
        f"CREATE VIRTUAL TABLE {INDEX_TABLE} USING fts5("
        "subject, body, tokenize = 'unicode61 remove_diacritics 2')",
        *_sqlite_triggers(fold_function),
        _sqlite_add("m", fold_function, "FROM messages m"),
    ]


def _postgresql_index() -> list[str]:
    def add(row: str, source: str = "") -> str:
        return (
            f"INSERT INTO {INDEX_TABLE} (message_pk, document) "
            "SELECT id, setweight(to_tsvector('simple', subject), 'A') || "
            "setweight(to_tsvector('simple', body), 'B') "
            f"FROM ({indexed_rows(row, 'postgresql', source)}) AS folded"
        )

    return [
        f"CREATE TABLE {INDEX_TABLE} ("
        "message_pk integer PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE, "
        "document tsvector NOT NULL)",
        f"CREATE INDEX ix_{INDEX_TABLE}_document ON {INDEX_TABLE} USING gin (document)",
        f"CREATE FUNCTION {INDEX_TABLE}_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {add('NEW')} "
        "ON CONFLICT (message_pk) DO UPDATE SET document = EXCLUDED.document; "
        "RETURN NULL; END $$",
        f"CREATE TRIGGER {INDEX_TABLE}_sync AFTER INSERT OR UPDATE OF subject, visible_text, "
        f"text ON messages FOR EACH ROW EXECUTE FUNCTION {INDEX_TABLE}_sync()",
        add("m", "FROM messages m"),
    ]


def create_index(conn: Connection, *, fold_function: bool = True) -> None:
    """Create the search index and its triggers, and index every stored message
    (dropping an index that exists first, so this also rebuilds it).

    On SQLite the triggers fold with the `postdesk_fold` function (as migration 0014 made
    them), or with `fold_function=False` in SQL (as migration 0009 made them)."""
    drop_index(conn)
    if _dialect(conn) == "postgresql":
        statements = _postgresql_index()
    else:
        statements = _sqlite_index(fold_function)
    for statement in statements:
        conn.exec_driver_sql(statement)


def replace_sqlite_triggers(conn: Connection, *, fold_function: bool) -> None:
    """SQLite: drop the index's three triggers and create them again, folding with the
    `postdesk_fold` function or in SQL (migration 0014 and its downgrade). The index's
    rows are not touched: both fold alike."""
    for kind in ("insert", "update", "delete"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {INDEX_TABLE}_{kind}")
    for statement in _sqlite_triggers(fold_function):
        conn.exec_driver_sql(statement)


def drop_index(conn: Connection) -> None:
    """Remove the search index and its triggers, if they exist."""
    if _dialect(conn) == "postgresql":
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {INDEX_TABLE}_sync ON messages")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {INDEX_TABLE}_sync()")
    else:
        for kind in ("insert", "update", "delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {INDEX_TABLE}_{kind}")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {INDEX_TABLE}")


def _dialect(conn: Connection | Session) -> str:
    return conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name


# --- queries ----------------------------------------------------------------------------

# A "quoted phrase" (an unclosed quote runs to the end) or a run of other characters.
_TERM: Final = re.compile(r'"([^"]*)"?|([^\s"]+)')
# C0 and C1 controls and bidirectional embeddings and isolates: never printed from mail,
# and in a query they only separate words.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Term:
    """One thing a hit must contain: any of `spellings`, each a word or a phrase."""

    spellings: tuple[str, ...]


# Persian affixes written joined, with a ZWNJ or with a space: the verb prefix and the
# plural suffix. A query word or pair with one is also searched in the other spellings.
PREFIXES: Final = ("نمی", "می")
SUFFIXES: Final = ("هایشان", "هایتان", "هایمان", "هایش", "هایت", "هایم", "هایی", "های", "ها")
_MAX_SPELLINGS: Final = 4


def _joined(words: list[str]) -> list[str]:
    """`words` with a lone prefix joined to the word after it and a lone suffix to the
    word before it ("می خواهم" -> "میخواهم", "کتاب ها" -> "کتابها")."""
    out: list[str] = []
    for word in words:
        if out and (out[-1] in PREFIXES or word in SUFFIXES) and out[-1] not in SUFFIXES:
            out[-1] += word
        else:
            out.append(word)
    return out


def _split(words: list[str]) -> list[str]:
    """`words` with a prefix or suffix written apart ("میخواهم" -> "می خواهم")."""
    out: list[str] = []
    for word in words:
        prefix = next((p for p in PREFIXES if word.startswith(p) and len(word) > len(p) + 1), "")
        suffix = next((x for x in SUFFIXES if word.endswith(x) and len(word) > len(x) + 1), "")
        if prefix:
            out += [prefix, word[len(prefix) :]]
        elif suffix:
            out += [word[: -len(suffix)], suffix]
        else:
            out.append(word)
    return out


def _spellings(phrase: str) -> tuple[str, ...]:
    """The spellings a term of the query is searched in: as folded (ZWNJ removed), with
    each ZWNJ a space, and with Persian affixes joined and apart."""
    spellings = [fold(phrase)]
    if ZERO_WIDTH_NON_JOINER in phrase:
        spellings.append(fold(phrase.replace(ZERO_WIDTH_NON_JOINER, " ")))
    words = spellings[0].split()
    spellings += [" ".join(_joined(words)), " ".join(_split(words))]
    return tuple(dict.fromkeys(spellings))[:_MAX_SPELLINGS]


def parse_query(query: str) -> list[Term]:
    """The terms of `query`: its words and "quoted phrases", folded, all required.

    Words without a letter or digit (punctuation) are left out; a query of nothing else,
    or one too long, is a SearchError. A Persian prefix or suffix written as a word of
    its own (می, ها) belongs to the word beside it.
    """
    if len(query) > MAX_QUERY:
        raise SearchError(f"the query is {len(query)} characters long; at most {MAX_QUERY}")
    pieces: list[tuple[str, bool]] = []  # (text, quoted)
    # Control characters (a NUL, which PostgreSQL refuses in text) separate words.
    for match in _TERM.finditer(_CONTROL.sub(" ", query)):
        quoted = match.group(1) is not None
        phrase = " ".join((match.group(1) if quoted else match[0]).split())
        if not any(char.isalnum() for char in fold(phrase)):
            continue
        if pieces and not quoted and not pieces[-1][1]:
            before = fold(pieces[-1][0])
            if before in PREFIXES or (fold(phrase) in SUFFIXES and before not in SUFFIXES):
                pieces[-1] = (f"{pieces[-1][0]} {phrase}", False)
                continue
        pieces.append((phrase, quoted))
    terms: list[Term] = []
    for phrase, _quoted in pieces:
        term = Term(_spellings(phrase))
        if term not in terms:
            terms.append(term)
    if not terms:
        raise SearchError(f"nothing to search for in {query!r}: give a word or a phrase")
    if len(terms) > MAX_TERMS:
        raise SearchError(f"the query has {len(terms)} words and phrases; at most {MAX_TERMS}")
    return terms


def fts5_query(terms: Sequence[Term]) -> str:
    """The FTS5 MATCH expression for `terms`: every spelling a quoted string ("" inside
    for a quote), so FTS5 operators and syntax in the input are plain text."""

    def quoted(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'

    return " AND ".join(
        "(" + " OR ".join(quoted(spelling) for spelling in term.spellings) + ")" for term in terms
    )


def _tsquery(terms: Sequence[Term], params: dict[str, str]) -> str:
    """SQL building the tsquery for `terms` from bound parameters it adds to `params`."""
    parts = []
    for term in terms:
        spellings = []
        for spelling in term.spellings:
            name = f"p{len(params)}"
            params[name] = spelling
            spellings.append(f"phraseto_tsquery('simple', :{name})")
        parts.append("(" + " || ".join(spellings) + ")")
    return " && ".join(parts)


@dataclass(frozen=True)
class Hit:
    """A ticket found: its number, status, subject, best message and a snippet of it."""

    number: int
    status: str
    subject: str
    message: int  # the best-ranked message's row id
    score: float  # lower is better (negated ts_rank on PostgreSQL)
    snippet: str


# The best-ranked `window` messages and their tickets. A ticket ranks as its best message,
# so the tickets in order of first appearance here are the best tickets; only when the
# window holds too few distinct tickets is a larger one read. Ranking stays in the
# database, which sorts with a bounded heap instead of grouping every match.
_ROWS_SQL: Final = """
SELECT h.message_pk, h.score, m.ticket_id, t.status, t.subject
FROM ({hits} ORDER BY score, message_pk LIMIT :window) AS h
JOIN messages m ON m.id = h.message_pk
JOIN tickets t ON t.id = m.ticket_id
ORDER BY h.score, h.message_pk
"""


def search(conn: Connection | Session, query: str, *, limit: int = 20) -> list[Hit]:
    """The tickets whose messages match `query`, best first (see the module docstring)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise SearchError(f"--limit must be 1 to {MAX_LIMIT}, not {limit}")
    terms = parse_query(query)
    params: dict[str, Any] = {}
    if _dialect(conn) == "postgresql":
        hits = (
            f"SELECT message_pk, -ts_rank(document, q) AS score "
            f"FROM {INDEX_TABLE}, (SELECT {_tsquery(terms, params)} AS q) AS query "
            "WHERE document @@ q"
        )
    else:
        params["match"] = fts5_query(terms)
        hits = (
            f"SELECT rowid AS message_pk, bm25({INDEX_TABLE}, {_SUBJECT_WEIGHT}, 1.0) AS score "
            f"FROM {INDEX_TABLE} WHERE {INDEX_TABLE} MATCH :match"
        )
    statement = text(_ROWS_SQL.format(hits=hits))
    window = 4 * limit
    while True:
        rows = conn.execute(statement, {**params, "window": window}).all()
        best: dict[int, Any] = {}
        for row in rows:
            best.setdefault(row.ticket_id, row)
        if len(best) >= limit or len(rows) < window:
            break
        window *= 8
    chosen = list(best.values())[:limit]
    texts = _message_texts(conn, [row.message_pk for row in chosen])
    return [
        Hit(
            number=row.ticket_id,
            status=row.status,
            subject=row.subject,
            message=row.message_pk,
            score=float(row.score),
            snippet=snippet(texts.get(row.message_pk, ("", ""))[1], terms)
            or snippet(texts.get(row.message_pk, ("", ""))[0], terms),
        )
        for row in chosen
    ]


_messages = table_of(Message)
_tickets = table_of(Ticket)
_TEXTS: Final = select(
    _messages.c.id, _messages.c.subject, _messages.c.visible_text, _messages.c.text
).where(_messages.c.id.in_(bindparam("ids", expanding=True)))


def _message_texts(conn: Connection | Session, ids: list[int]) -> dict[int, tuple[str, str]]:
    if not ids:
        return {}
    rows = conn.execute(_TEXTS, {"ids": ids}).all()
    return {
        row.id: (row.subject or "", row.visible_text if row.visible_text is not None else row.text)
        for row in rows
    }


def normalize_message_id(value: str) -> str | None:
    """The Message-ID in `value` as messages store it (without angle brackets), or None
    when `value` is not one ("<local@domain>", brackets optional)."""
    candidate = value.strip()
    if candidate.startswith("<") and candidate.endswith(">"):
        candidate = candidate[1:-1].strip()
    if (
        "@" not in candidate
        or _CONTROL.search(candidate)
        or any(char.isspace() or char in "<>" for char in candidate)
    ):
        return None
    return candidate


_BY_MESSAGE_ID: Final = (
    select(_tickets.c.id, _tickets.c.status, _tickets.c.subject, _messages.c.id.label("pk"))
    .join(_messages, _messages.c.ticket_id == _tickets.c.id)
    .where(_messages.c.message_id == bindparam("message_id"))
    .order_by(_messages.c.id)
)


def find_message_id(conn: Connection | Session, message_id: str) -> list[Hit]:
    """The ticket holding the message with `message_id` (brackets optional), if any."""
    wanted = normalize_message_id(message_id)
    if wanted is None or len(wanted) > 998:
        raise SearchError(f"{message_id!r} is not a Message-ID such as <abc@example.com>")
    rows = conn.execute(_BY_MESSAGE_ID, {"message_id": wanted}).all()
    seen: dict[int, Hit] = {}
    for row in rows:
        seen.setdefault(
            row.id, Hit(row.id, row.status, row.subject, row.pk, 0.0, f"Message-ID <{wanted}>")
        )
    return list(seen.values())


# --- snippets ---------------------------------------------------------------------------

_SPACE: Final = re.compile(r"\s+")


def _folded_with_offsets(value: str) -> tuple[str, list[int]]:
    """`value` folded and lower-cased, and for each character of that, where it came from."""
    out: list[str] = []
    where: list[int] = []
    for index, char in enumerate(value):
        for folded in fold(char).lower():
            out.append(folded)
            where.append(index)
    return "".join(out), where


def snippet(value: str, terms: Sequence[Term], width: int = SNIPPET) -> str:
    """About `width` characters of `value` around the first place a term appears, on one
    line; "" when no term appears as written (the tokenizer matched something subtler)."""
    flat = _SPACE.sub(" ", value).strip()
    folded, where = _folded_with_offsets(flat)
    found: list[int] = []
    for term in terms:
        for spelling in term.spellings:
            needle = spelling.lower()
            position = folded.find(needle)
            if position >= 0:
                found.append(where[position])
    if not found:
        return ""
    first = min(found)
    start = max(0, first - width // 3)
    end = min(len(flat), start + width)
    start = max(0, min(start, end - width))
    # Whole words at both ends, when a space is near.
    if start > 0 and 0 <= (space := flat.find(" ", start, first)) < start + 15:
        start = space + 1
    if end < len(flat) and (space := flat.rfind(" ", first, end)) > end - 15:
        end = space
    piece = flat[start:end].strip()
    return ("…" if start > 0 else "") + piece + ("…" if end < len(flat) else "")


# --- the command's query ------------------------------------------------------------


def find_hits(db: Database, query: str, message_id: str | None, *, limit: int) -> list[Hit]:
    """The hits of `postdesk tickets search`: for `query`, or for `message_id`, or for a
    query that is a Message-ID (printing them is the command line's business)."""
    if message_id is None and query.strip().startswith("<") and query.strip().endswith(">"):
        message_id = query
    elif message_id is not None and query.strip():
        raise SearchError("give words to search for or --message-id, not both")
    with db.read_session() as session:
        if message_id is not None:
            return find_message_id(session, message_id)[:limit]
        return search(session, query, limit=limit)
