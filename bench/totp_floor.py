"""The floor under bench/totp_verify.py: the least database work one TOTP verification needs,
done with raw asyncpg and no HTTP, framework or ORM at all, on the gateway's real schema.

Per verification, as the gateway must do it (server-owned challenge, single use, step never
reused, session rotated, every outcome audited):
- the challenge page: read the session with its user, read the TOTP credential, INSERT the
  challenge (autocommit, three round trips);
- the answer: one transaction (BEGIN, read the session with its user, consume the challenge
  with a conditional UPDATE ... RETURNING, store the step with a version-checked UPDATE,
  rotate the session id, INSERT the audit row, COMMIT);
plus the TOTP code check itself (HMAC-SHA1) and opening the sealed seed (AES-GCM) in Python.
N concurrent tasks share one asyncpg pool. Prints the rate and the CPU per verification of
this process and of PostgreSQL; whatever the end-to-end benchmark reaches, it cannot beat this.

`--statements minimal` does the same work with the fewest round trips the same guarantees
allow (bench/_totp_minimal.py): the challenge page as one statement (a data-modifying CTE),
the answer as one read and, after the checks in Python, one chained write (consume, step,
rotation with a new CSRF token, audit), autocommit, and a pool that does not reset connections
on release; the cookie is a token whose SHA-256 is the session id, as the gateway does it.

    .venv/bin/python bench/totp_floor.py [--statements current|minimal] [--users 20000]
        [--concurrency 64] [--duration 10] [--pool 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from twofa.methods.totp import hotp, new_secret, secret_bytes
from twofa.security.sealing import Sealer
from twofa.security.tokens import new_token, token_digest
from twofa.storage.database import create_engine, upgrade

sys.path.insert(0, str(Path(__file__).parent))
from _totp_load import cpu_seconds, postgres_pids
from _totp_minimal import answer, keep_connection, open_challenge, session_id_of

POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SEALER = Sealer("totp-floor-benchmark-secret-key-0000000000")
CLIENT = ("127.0.0.1", "bench")

READ_SESSION = """SELECT s.id, s.level, s.csrf_token, s.expires_at, u.id, u.username, u.enabled
FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1"""
READ_CREDENTIAL = """SELECT id, secret_sealed, state, version FROM credentials
WHERE user_id = $1 AND method = 'totp'"""
OPEN_CHALLENGE = """INSERT INTO challenges (id, user_id, session_id, method, purpose, status,
created_at, expires_at) VALUES ($1, $2, $3, 'totp', 'sign_in', 'pending', $4, $5)"""
CONSUME = """UPDATE challenges SET status = 'consumed', consumed_at = $2
WHERE id = $1 AND status = 'pending' AND expires_at > $2 RETURNING user_id"""
STORE_STEP = """UPDATE credentials SET state = $2, version = version + 1, last_used_at = $3
WHERE id = $1 AND version = $4"""
ROTATE = "UPDATE sessions SET id = $2, level = 2, second_factor_at = $3 WHERE id = $1"
AUDIT = """INSERT INTO audit_events (at, kind, outcome, username, client_ip, user_agent, detail)
VALUES ($1, 'second_factor', 'success', $2, '127.0.0.1', 'bench', $3)"""


def database_name() -> str:
    return f"twofa_floor_{secrets.token_hex(4)}"


async def prepare(name: str, users: int, sealer: Sealer = SEALER) -> tuple[str, list[str]]:
    """Creates and migrates database `name` and seeds `users` users with a TOTP credential
    each (sealed with `sealer`); returns its DSN and the users' secrets (user id i + 1)."""
    admin = await asyncpg.connect(POSTGRES_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"{POSTGRES_DSN.rsplit('/', 1)[0]}/{name}"
    engine = create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    await upgrade(engine)
    await engine.dispose()
    now = datetime.now(UTC)
    totp_secrets = [new_secret() for _ in range(users)]
    connection = await asyncpg.connect(dsn)
    await connection.executemany(
        "INSERT INTO users (id, username, display_name, email, enabled, is_admin, twofa_enabled,"
        " created_at, enrolment_postponements, directory) VALUES ($1, $2, '', '', true, false,"
        " true, $3, 0, 'local')",
        [(i, f"user{i}", now) for i in range(1, users + 1)],
    )
    await connection.executemany(
        "INSERT INTO credentials (user_id, method, label, secret_sealed, state, version,"
        " created_at) VALUES ($1, 'totp', '', $2, '{}', 1, $3)",
        [(i, sealer.seal(secret, "totp"), now) for i, secret in enumerate(totp_secrets, 1)],
    )
    await connection.close()
    return dsn, totp_secrets


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def password_sessions(dsn: str, users: int) -> list[str]:
    """Forgets every TOTP step used and gives each user a fresh session at the password level,
    as after the password step; returns the cookie values (user id i + 1), whose SHA-256 is
    the session id, as the gateway stores them."""
    now = datetime.now(UTC)
    cookies = [new_token() for _ in range(users)]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE credentials SET state = '{}' WHERE method = 'totp'")
        await connection.execute("DELETE FROM sessions")
        await connection.executemany(
            "INSERT INTO sessions (id, user_id, level, csrf_token, next_url, created_at,"
            " last_seen_at, expires_at, client_ip, user_agent) VALUES ($1, $2, 1, $3, '/', $4,"
            " $4, $5, '127.0.0.1', 'bench')",
            [
                (token_digest(cookie), i, new_token(), now, now + timedelta(minutes=15))
                for i, cookie in enumerate(cookies, 1)
            ],
        )
    finally:
        await connection.close()
    return cookies


def machine_state() -> str:
    """The load average and whether a test run shares the machine (printed with the figures)."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"pytest" in (entry / "cmdline").read_bytes():
                count += 1
        except OSError:
            continue
    return f"load average {load}; " + (
        f"{count} pytest process(es) running" if count else "no pytest"
    )


async def new_session(connection: asyncpg.Connection, user_id: int, now: datetime) -> str:
    session_id = secrets.token_hex(32)
    await connection.execute(
        "INSERT INTO sessions (id, user_id, level, csrf_token, next_url, created_at,"
        " last_seen_at, expires_at, client_ip, user_agent) VALUES ($1, $2, 1, $3, '/', $4, $4,"
        " $5, '', '')",
        session_id,
        user_id,
        secrets.token_hex(16),
        now,
        now + timedelta(hours=8),
    )
    return session_id


async def verify(pool: asyncpg.Pool, session_id: str) -> str:
    now = datetime.now(UTC)
    async with pool.acquire() as connection:  # the challenge page
        session = await connection.fetchrow(READ_SESSION, session_id)
        credential = await connection.fetchrow(READ_CREDENTIAL, session[4])
        challenge_id = secrets.token_hex(16)
        await connection.execute(
            OPEN_CHALLENGE, challenge_id, session[4], session_id, now, now + timedelta(minutes=5)
        )
    key = secret_bytes(SEALER.open(credential["secret_sealed"], "totp"))
    step = int(time.time()) // 30
    typed = hotp(key, step)
    if not any(hotp(key, step + drift) == typed for drift in (-1, 0, 1)):  # the +-1 window
        raise AssertionError("the code did not match")
    async with pool.acquire() as connection, connection.transaction():  # the answer
        session = await connection.fetchrow(READ_SESSION, session_id)
        consumed = await connection.fetchval(CONSUME, challenge_id, now)
        assert consumed == session[4]
        state = f'{{"last_step": {step}}}'
        await connection.execute(STORE_STEP, credential["id"], state, now, credential["version"])
        rotated = secrets.token_hex(32)
        await connection.execute(ROTATE, session_id, rotated, now)
        await connection.execute(AUDIT, now, session[5], '{"method": "totp"}')
    return rotated


async def verify_minimal(pool: asyncpg.Pool, cookie: str, secret: str) -> str:
    """The same verification with one statement for the page and one read plus one write for
    the answer; the code is what the user's app shows now."""
    session_id = session_id_of(cookie)
    assert session_id is not None
    opened = await open_challenge(pool, session_id)  # the challenge page
    assert opened is not None, "the session may not ask for a code"
    challenge_id, csrf = opened
    code = hotp(secret_bytes(secret), int(time.time()) // 30)
    outcome = await answer(pool, SEALER, session_id, challenge_id, csrf, code, CLIENT)
    assert outcome.status == "allow", outcome.status
    return outcome.cookie


async def worker(
    pool: asyncpg.Pool,
    minimal: bool,
    sessions: list[tuple[str, str]],
    until: float,
    done: list[float],
) -> None:
    while sessions and time.monotonic() < until:
        cookie, secret = sessions.pop()
        if minimal:
            await verify_minimal(pool, cookie, secret)
        else:
            await verify(pool, cookie)
        done.append(time.monotonic())


async def run(args: argparse.Namespace) -> None:
    minimal = args.statements == "minimal"
    name = database_name()
    try:
        dsn, totp_secrets = await prepare(name, args.users)
        if minimal:
            pool = await asyncpg.create_pool(
                dsn, min_size=args.pool, max_size=args.pool, reset=keep_connection
            )
            cookies = await password_sessions(dsn, args.users)
            sessions = list(zip(cookies, totp_secrets, strict=True))
        else:
            pool = await asyncpg.create_pool(dsn, min_size=10, max_size=args.pool)
            now = datetime.now(UTC)
            async with pool.acquire() as connection:
                sessions = [
                    (await new_session(connection, i, now), "") for i in range(1, args.users + 1)
                ]
        print(f"statements: {args.statements}; {machine_state()}")
        started = time.monotonic()
        until = started + args.duration
        done: list[float] = []
        before = (cpu_seconds(os.getpid()), {p: cpu_seconds(p) for p in postgres_pids(name)})
        await asyncio.gather(
            *(worker(pool, minimal, sessions, until, done) for _ in range(args.concurrency))
        )
        elapsed = (done[-1] if done else time.monotonic()) - started
        client = cpu_seconds(os.getpid()) - before[0]
        postgres = sum(cpu_seconds(p) - before[1].get(p, 0.0) for p in postgres_pids(name))
        await pool.close()
        count = len(done)
        print(f"{count} verifications in {elapsed:.1f} s, {args.concurrency} concurrent")
        print(
            f"CPU per verification: this process {client / count * 1000:.2f} ms, "
            f"PostgreSQL {postgres / count * 1000:.2f} ms, "
            f"together {(client + postgres) / count * 1000:.2f} ms"
        )
        print(f"after: {machine_state()}")
        if not sessions:
            print("warning: the sessions ran out before the time did: raise --users")
        kind = "one statement per phase" if minimal else "today's statements"
        print(
            f"totp floor: {count / elapsed:,.0f} per s (raw asyncpg, no HTTP, {kind}), postgresql"
        )
    finally:
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--statements", choices=("current", "minimal"), default="current")
    parser.add_argument("--pool", type=int, default=20, help="asyncpg connections")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
