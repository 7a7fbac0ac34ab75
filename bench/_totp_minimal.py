"""The fewest round trips one TOTP verification needs on the gateway's real schema, shared by
bench/totp_floor.py (`--statements minimal`) and bench/totp_http_floor.py's raw ASGI server.

- The challenge page is ONE statement: a data-modifying CTE finds the live session (at the
  password or signed-in level, not idle, not expired) with its enabled user, checks the user
  has a TOTP credential and that TOTP is not locked out for them, INSERTs the challenge bound
  to that session and user, and returns the session's CSRF token (no row: refused).
- The answer is ONE read (the session, its user, the pending unexpired challenge bound to both,
  the TOTP credential's sealed seed, state and version, no lock-out), the CSRF and code checks
  in Python (constant-time compares, the seed opened with AES-GCM, a step newer than the last
  used one within +-1 step), then ONE write: a CTE chain where the conditional consume of the
  challenge gates the version-checked step update, which gates the session rotation (new id
  and CSRF token, signed in), which gates the audit INSERT and the reset of the failure
  counter. If the consume matched but a later link did not (a racing verification changed the
  credential), the final SELECT divides by zero, so the whole statement rolls back: nothing is
  written unless every link matched. Autocommit: no BEGIN/COMMIT round trips.

Imports no framework and no ORM: the ASGI server's workers import this module only.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from twofa.methods.totp import verify as totp_verify
from twofa.security.sealing import Sealer
from twofa.security.tokens import new_token, token_digest

# Written into the statements as literals: the default Settings (30 minutes idle, 12 hours
# signed in), TotpMethod.challenge_seconds (300), services.admin.accounts.method_lockout_key.

# $1 session id (digest of the cookie), $2 new challenge id
OPEN_PAGE = """WITH s AS (
  SELECT s.id, s.user_id, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
  WHERE s.id = $1 AND s.level IN (1, 2) AND s.expires_at > now()
    AND s.last_seen_at > now() - interval '30 minutes' AND u.enabled
    AND EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id AND c.method = 'totp')
    AND NOT EXISTS (SELECT 1 FROM throttle t WHERE t.key = '2fa-totp:' || lower(u.username)
                    AND t.locked_until > now())
), opened AS (
  INSERT INTO challenges (id, user_id, session_id, method, purpose, status, created_at,
                          expires_at)
  SELECT $2, s.user_id, s.id, 'totp', 'validate', 'pending', now(),
         now() + interval '300 seconds' FROM s
  RETURNING id
)
SELECT s.csrf_token FROM s, opened"""

# $1 session id, $2 challenge id
READ_ANSWER = """SELECT s.user_id, s.level, s.csrf_token, u.username, c.id, c.secret_sealed,
  c.state, c.version
FROM sessions s
JOIN users u ON u.id = s.user_id
JOIN challenges ch ON ch.id = $2 AND ch.session_id = s.id AND ch.user_id = s.user_id
  AND ch.method = 'totp' AND ch.purpose = 'validate' AND ch.consumed_at IS NULL
  AND ch.expires_at > now()
JOIN credentials c ON c.user_id = s.user_id AND c.method = 'totp'
WHERE s.id = $1 AND s.level IN (1, 2) AND s.expires_at > now()
  AND s.last_seen_at > now() - interval '30 minutes' AND u.enabled
  AND NOT EXISTS (SELECT 1 FROM throttle t WHERE t.key = '2fa-totp:' || lower(u.username)
                  AND t.locked_until > now())"""

# $1 challenge id, $2 session id, $3 user id, $4 credential id, $5 version read, $6 new state,
# $7 new session id, $8 new CSRF token, $9 username, $10 client ip, $11 user agent, $12 detail
WRITE_ANSWER = """WITH consumed AS (
  UPDATE challenges SET consumed_at = now(), status = 'allow', payload = NULL
  WHERE id = $1 AND session_id = $2 AND user_id = $3 AND consumed_at IS NULL
    AND expires_at > now()
  RETURNING id
), stepped AS (
  UPDATE credentials SET state = $6, version = version + 1, last_used_at = now()
  WHERE id = $4 AND version = $5 AND EXISTS (SELECT 1 FROM consumed)
  RETURNING id
), rotated AS (
  UPDATE sessions SET id = $7, csrf_token = $8, level = 2, second_factor_at = now(),
    created_at = now(), last_seen_at = now(), expires_at = now() + interval '12 hours'
  WHERE id = $2 AND EXISTS (SELECT 1 FROM stepped)
  RETURNING id
), audited AS (
  INSERT INTO audit_events (at, kind, outcome, username, client_ip, user_agent, detail)
  SELECT now(), 'second_factor', 'allow', $9, $10, $11, $12 FROM rotated
  RETURNING id
), reset AS (
  DELETE FROM throttle WHERE key = '2fa-totp:' || lower($9) AND EXISTS (SELECT 1 FROM audited)
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM consumed) THEN 0
  ELSE 1 / (SELECT count(*)::int FROM audited) END"""

# a refused code: count the failure (locked out for 15 minutes at the 5th within 15 minutes)
# and audit it, in one statement. $1 username, $2 client ip, $3 user agent, $4 detail
COUNT_FAILURE = """WITH counted AS (
  INSERT INTO throttle AS t (key, failures, window_started_at) VALUES
    ('2fa-totp:' || lower($1), 1, now())
  ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN t.window_started_at < now() - interval '15 minutes' THEN 1
                    WHEN t.failures + 1 >= 5 THEN 0 ELSE t.failures + 1 END,
    window_started_at = CASE WHEN t.window_started_at < now() - interval '15 minutes'
                               OR t.failures + 1 >= 5 THEN now() ELSE t.window_started_at END,
    locked_until = CASE WHEN t.window_started_at >= now() - interval '15 minutes'
                         AND t.failures + 1 >= 5 THEN now() + interval '15 minutes' END
  RETURNING key
)
INSERT INTO audit_events (at, kind, outcome, username, client_ip, user_agent, detail)
SELECT now(), 'second_factor', 'deny', $1, $2, $3, $4 FROM counted"""


async def keep_connection(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing. None of these statements leaves session state
    behind, and asyncpg's default reset costs one more round trip per release."""


def session_id_of(cookie: str) -> str | None:
    """The stored id of a session cookie's value (its SHA-256), None when it cannot be one."""
    return token_digest(cookie) if cookie and len(cookie) <= 100 else None


async def open_challenge(pool: asyncpg.Pool, session_id: str) -> tuple[str, str] | None:
    """The challenge page's one statement: the new challenge's id and the CSRF token to show,
    or None when this session may not ask for a TOTP code now."""
    challenge_id = new_token()
    csrf = await pool.fetchval(OPEN_PAGE, session_id, challenge_id)
    return None if csrf is None else (challenge_id, str(csrf))


@dataclass(frozen=True)
class Outcome:
    status: str  # "allow", "csrf" (403), "expired" (no answerable challenge), "deny" (the code)
    cookie: str = ""  # the rotated session's cookie value when allowed


def same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


async def answer(
    pool: asyncpg.Pool,
    sealer: Sealer,
    session_id: str,
    challenge_id: str,
    csrf_given: str,
    code: str,
    client: tuple[str, str],
) -> Outcome:
    """One read, the checks, one write (and one more statement only to count a failure)."""
    if not challenge_id or len(challenge_id) > 64:
        return Outcome("expired")
    row = await pool.fetchrow(READ_ANSWER, session_id, challenge_id)
    if row is None:
        return Outcome("expired")
    user_id, level, csrf, username, credential_id, sealed, state, version = row
    if not same(csrf, csrf_given):
        return Outcome("csrf")
    last: Any = json.loads(state).get("last_step")
    secret = sealer.open(sealed, "totp")
    match = totp_verify(secret, code, datetime.now(UTC), last if isinstance(last, int) else None)
    detail = json.dumps({"method": "totp", "step_up": level == 2})
    if match is not None:
        token = new_token()
        try:
            written = await pool.fetchval(
                WRITE_ANSWER,
                challenge_id,
                session_id,
                user_id,
                credential_id,
                version,
                json.dumps({"last_step": match.step}),
                token_digest(token),
                new_token(),
                username,
                *client,
                detail,
            )
        except asyncpg.DivisionByZeroError:  # consumed, but a racing sign-in used the step
            written = 0
        if written == 1:
            return Outcome("allow", token)
    await pool.execute(COUNT_FAILURE, username, *client, detail)
    return Outcome("deny")
