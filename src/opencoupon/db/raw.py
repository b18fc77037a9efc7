"""The hottest statements (every validation, stamp and event) run on the raw driver.

Through SQLAlchemy each statement costs about 0.03 ms of Python before the driver sees it (compile
cache lookup, parameter processing, result wrapping); the driver itself needs about 0.005 ms.
A `RawStatement` is plain SQL with `:name` parameters, kept in both drivers' styles, executed on
the DBAPI connection of the caller's transaction: same connection, same transaction, same write
lock as everything else the call does. Values are stored exactly as SQLAlchemy stores them (on
SQLite: datetimes as `YYYY-MM-DD HH:MM:SS.ffffff` text, decimals as floats, booleans as 0/1), so
ORM reads of these rows see no difference.

Unlike `session.execute`, a raw statement does not autoflush: pending ORM changes of the same
transaction are not in the database yet when it runs (call `session.flush()` first if they must be).
The hot paths change rows through raw statements and `set_committed_value`, so they have none."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state

T = TypeVar("T")

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_DBAPI_KEY = "opencoupon_dbapi_connection"
_SAVEPOINT_KEY = "opencoupon_savepoint_sent"


def _sqlite_datetime(value: dt.datetime) -> str:
    # SQLAlchemy's format (always six digits of microseconds; an offset is not stored).
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


# The sqlite3 module converts the parameters of raw statements itself, in C, calling these only
# for the three types it does not store natively (a Python pass over every parameter cost more
# than the statement). Registered for the whole process: SQLAlchemy hands the driver values it
# has already converted, so only raw statements meet them. bool is an int to sqlite3 already.
sqlite3.register_adapter(dt.datetime, _sqlite_datetime)
sqlite3.register_adapter(dt.date, dt.date.isoformat)
sqlite3.register_adapter(Decimal, float)


class RawStatement:
    """One SQL statement, written once with `:name` parameters."""

    def __init__(self, sql: str) -> None:
        self.sqlite_sql = sql
        # psycopg uses %(name)s; a literal % must be doubled.
        self.pyformat_sql = _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))

    def __repr__(self) -> str:
        return f"RawStatement({self.sqlite_sql!r})"


def execute(session: Session, statement: RawStatement, params: dict[str, Any]) -> Any:
    """Run `statement` in the session's transaction (beginning it if needed); the DBAPI cursor.
    A constraint violation raises SQLAlchemy's IntegrityError, as a statement through it would."""
    dbapi = dbapi_connection(session)
    try:
        if isinstance(dbapi, sqlite3.Connection):
            return dbapi.execute(statement.sqlite_sql, params)
        cursor = dbapi.cursor()
        cursor.execute(statement.pyformat_sql, params)
        return cursor
    except (sqlite3.IntegrityError, psycopg.IntegrityError) as exc:
        raise IntegrityError(statement.sqlite_sql, params, exc) from exc


def dbapi_connection(session: Session) -> Any:
    """The driver connection of the session's transaction (beginning it if needed), remembered
    for the transaction's lifetime: asking SQLAlchemy for it costs more than a statement.

    Inside `session.begin_nested()` the SAVEPOINT is sent only once a connection is asked of the
    session: a block of raw statements alone had none, and rolling the block back undid nothing
    (update/multiple left a session refused by its campaign's limit validated). So the first raw
    statement of a nested transaction asks for it."""
    nested = session.get_nested_transaction()
    if nested is not None and session.info.get(_SAVEPOINT_KEY) is not nested:
        session.connection()
        session.info[_SAVEPOINT_KEY] = nested
    transaction = session.get_transaction()
    known = session.info.get(_DBAPI_KEY)
    if transaction is not None and known is not None and known[0] is transaction:
        return known[1]
    dbapi = session.connection().connection.dbapi_connection
    session.info[_DBAPI_KEY] = (session.get_transaction(), dbapi)
    return dbapi


def reset_info(session: Session) -> None:
    """Forget what the last call kept in `session.info` (a group runs many calls in one session),
    keeping the driver connection remembered for the transaction."""
    connection = session.info.get(_DBAPI_KEY)
    session.info.clear()
    if connection is not None:
        session.info[_DBAPI_KEY] = connection


def scalar(session: Session, statement: RawStatement, params: dict[str, Any]) -> Any:
    """The first column of the first row, or None."""
    row = execute(session, statement, params).fetchone()
    return None if row is None else row[0]


def rowcount(session: Session, statement: RawStatement, params: dict[str, Any]) -> int:
    return int(execute(session, statement, params).rowcount)


# ---------------------------------------------------------------- loading ORM objects


@dataclass(frozen=True)
class _Loader:
    mapper: Mapper[Any]
    keys: tuple[str, ...]
    names: tuple[str, ...]
    pk_index: int


_loaders: dict[type[Any], _Loader] = {}
_processors: dict[tuple[RawStatement, str], tuple[Any, ...]] = {}


def _loader(model: type[Any]) -> _Loader:
    loader = _loaders.get(model)
    if loader is None:
        mapper = sa_inspect(model)
        props = list(mapper.column_attrs)
        (pk,) = mapper.primary_key
        names = tuple(prop.columns[0].name for prop in props)
        loader = _Loader(mapper, tuple(prop.key for prop in props), names, names.index(pk.name))
        _loaders[model] = loader
    return loader


def columns(model: type[Any], alias: str) -> str:
    """The select list `load_one` expects for `model`, its table aliased as `alias`."""
    return ", ".join(f'{alias}."{name}"' for name in _loader(model).names)


def _row_processors(
    statement: RawStatement, models: tuple[type[Any], ...], dialect: Dialect, description: Any
) -> tuple[Any, ...]:
    """SQLAlchemy's own result processors for the row, so values come out exactly as an ORM
    query's would (some depend on the driver's type code of the column, hence `description`)."""
    key = (statement, dialect.name)
    found = _processors.get(key)
    if found is None:
        types = []
        for model in models:
            table_columns = {column.name: column for column in sa_inspect(model).columns}
            types += [table_columns[name].type for name in _loader(model).names]
        found = tuple(
            sa_type.dialect_impl(dialect).result_processor(dialect, column[1])
            for sa_type, column in zip(types, description, strict=True)
        )
        _processors[key] = found
    return found


def load_one(
    session: Session, statement: RawStatement, params: dict[str, Any], *models: type[Any]
) -> tuple[Any, ...] | None:
    """The first row of `statement` (selecting `columns(model, …)` of each model in turn) as
    persistent ORM objects of this session, or None. An object already in the session is
    returned as it is; a new one is attached as freshly loaded, without a query of its own.

    An ORM query costs about 0.1 ms more than this per row (compiling, loading machinery)."""
    cursor = execute(session, statement, params)
    row = cursor.fetchone()
    if row is None:
        return None
    processors = _row_processors(statement, models, session.get_bind().dialect, cursor.description)
    converted = [
        value if process is None or value is None else process(value)
        for value, process in zip(row, processors, strict=True)
    ]
    objects: list[Any] = []
    offset = 0
    for model in models:
        loader = _loader(model)
        end = offset + len(loader.keys)
        values = converted[offset:end]
        offset = end
        identity = loader.mapper.identity_key_from_primary_key((values[loader.pk_index],))
        objects.append(_persistent(session, loader, identity, zip(loader.keys, values, strict=True)))
    return tuple(objects)


def adopt(session: Session, snapshot: T) -> T:
    """This session's copy of a detached, fully loaded object (a cached snapshot that other
    sessions may be copying too): what `session.merge(snapshot, load=False)` gives, for a
    fraction of its cost. The snapshot itself is left as it is."""
    state = instance_state(snapshot)
    assert state.key is not None, "adopt() takes a persistent object's detached snapshot"
    loader = _loader(type(snapshot))
    loaded = state.dict
    copy: T = _persistent(session, loader, state.key, ((k, loaded[k]) for k in loader.keys if k in loaded))
    return copy


def _persistent(session: Session, loader: _Loader, identity: Any, values: Iterable[tuple[str, Any]]) -> Any:
    """The session's object for `identity`: the one it already has, or a new one holding `values`
    as loaded from the database. A new one is made the way SQLAlchemy's own loading makes it
    (orm/loading.py): keyed, placed in the identity map and filled in directly, so nothing of
    it counts as modified."""
    existing = session.identity_map.get(identity)
    if existing is not None:
        return existing
    obj = loader.mapper.class_manager.new_instance()
    obj.__dict__.update(values)
    state = instance_state(obj)
    state.key = identity
    state.identity_token = None
    state.session_id = session.hash_key
    session.identity_map._add_unpresent(state, identity)
    return obj
