"""When the database cannot be reached: which errors mean that (a connection refused, dropped
or not to be had from the pool in time), and the one answer they get. Pages and the API answer
503 with `Retry-After`, forward-auth answers 503 (never an allow), and `/healthz/ready` says
not ready so a load balancer takes the node out; the gateway reconnects by itself when the
database is back."""

from __future__ import annotations

from typing import Final

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

RETRY_AFTER_S: Final = "5"
MESSAGE: Final = "The sign-in service is temporarily unavailable. Please try again in a moment."
# Errors of the connection, not of the data: a constraint violation or a bad statement is a
# bug or a conflict, and stays one.
DATABASE_AWAY: Final = (OperationalError, InterfaceError, PoolTimeout, ConnectionError)
# Every class a database failure may come as, for the handlers that tell them apart.
DATABASE_ERRORS: Final = (DBAPIError, PoolTimeout, ConnectionError)


def database_away(exc: BaseException) -> bool:
    if isinstance(exc, DATABASE_AWAY):
        return True
    # No statement: it failed connecting (refused, the database not accepting connections).
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or exc.statement is None)
