"""The hottest statements (every validation, stamp and event) run on the raw driver.

Through SQLAlchemy each statement costs about 0.03 ms of Python before the driver sees it (compile
cache lookup, parameter processing, result wrapping); the driver itself needs about 0.005 ms.
A `RawStatement` is plain SQL with `:name` parameters, kept in both drivers' styles, executed on
the DBAPI connection of the caller's transaction: same connection, same transaction, same write
lock as everything else the call does. Values are stored exactly as SQLAlchemy stores them (on
SQLite: datetimes as `YYYY-MM-DD HH:MM:SS.ffffff` text, decimals as floats, booleans as 0/1), so
ORM reads of these rows see no difference."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_DBAPI_KEY = "opencoupon_dbapi_connection"


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value  # bool is an int to sqlite3 already


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
            return dbapi.execute(statement.sqlite_sql, {k: _sqlite_value(v) for k, v in params.items()})
        cursor = dbapi.cursor()
        cursor.execute(statement.pyformat_sql, params)
        return cursor
    except (sqlite3.IntegrityError, psycopg.IntegrityError) as exc:
        raise IntegrityError(statement.sqlite_sql, params, exc) from exc


def dbapi_connection(session: Session) -> Any:
    """The driver connection of the session's transaction (beginning it if needed), remembered
    for the transaction's lifetime: asking SQLAlchemy for it costs more than a statement."""
    transaction = session.get_transaction()
    known = session.info.get(_DBAPI_KEY)
    if transaction is not None and known is not None and known[0] is transaction:
        return known[1]
    dbapi = session.connection().connection.dbapi_connection
    session.info[_DBAPI_KEY] = (session.get_transaction(), dbapi)
    return dbapi


def scalar(session: Session, statement: RawStatement, params: dict[str, Any]) -> Any:
    """The first column of the first row, or None."""
    row = execute(session, statement, params).fetchone()
    return None if row is None else row[0]


def rowcount(session: Session, statement: RawStatement, params: dict[str, Any]) -> int:
    return int(execute(session, statement, params).rowcount)
