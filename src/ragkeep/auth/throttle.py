"""Log-in throttling, counted in PostgreSQL so that every replica shares the counts.

Failed log-ins are counted per account (the name as typed, whether or not it exists, so that the
answer does not tell which do), per client address, and per (account, address) pair, each over a
window that starts at its first failure (``[auth] login_failure_window_seconds``). Past a limit,
log-ins are refused (RateLimited: the API's 429 with ``Retry-After`` until the window ends)
*before* the password is checked: the right password is refused too, or throttling would only
slow guessing down, and no argon2 time is spent on a refused attempt.

The pair limit is the tight one: it stops guessing one account from one address. The account
and address limits are looser and stop guessing from many addresses, or many accounts from one;
they do not apply to an address the account has logged in from successfully in the last
``KNOWN_FOR`` (a ``known`` row), so an attacker who makes an account fail from many addresses
locks it for new addresses only: its owner keeps logging in from where they did before.

Each attempt is counted before the password is checked, in one upsert that returns the counts;
its row locks serialise concurrent attempts on any replica, so exactly ``limit`` attempts get as
far as argon2 however many are sent at once. A refused attempt is rolled back (it counts for
nothing); a successful one takes its count back and clears its pair's failures.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from ragkeep.config import AuthConfig
from ragkeep.errors import RateLimited

#: How long a successful log-in makes its address "known" for the account (refreshed by each one).
KNOWN_FOR = timedelta(days=30)
#: Expired rows deleted per failed log-in: bounded work on the request that pays for it.
PRUNE_BATCH = 200

# One statement: the three counters of this attempt (locked in the same order by every attempt, so
# concurrent ones queue instead of deadlocking; a window that has ended starts again at 1), and
# whether the pair is known. Commit does not wait for the WAL flush: a crash loses at most the last
# fraction of a second of counts.
_ATTEMPT = """
WITH s AS (SELECT set_config('synchronous_commit', 'off', true)),
hit AS (
    INSERT INTO login_throttle AS t (scope, key, failures, expires_at)
    SELECT v.scope, v.key, 1, now() + make_interval(secs => %(window)s)
    FROM s CROSS JOIN (VALUES (1, 'account', %(account)s), (2, 'address', %(address)s),
                              (3, 'pair', %(pair)s)) AS v(ord, scope, key)
    ORDER BY v.ord
    ON CONFLICT (scope, key) DO UPDATE SET
        failures = CASE WHEN t.expires_at <= now() THEN 1 ELSE t.failures + 1 END,
        expires_at = CASE WHEN t.expires_at <= now() THEN excluded.expires_at ELSE t.expires_at END
    RETURNING t.scope, t.failures, extract(epoch FROM t.expires_at - now())
)
SELECT hit.*, EXISTS (SELECT 1 FROM login_throttle k
                      WHERE k.scope = 'known' AND k.key = %(pair)s AND k.expires_at > now())
FROM hit
"""

# A success takes its attempt back, in the attempt's lock order, forgets the pair's failures,
# and makes the pair known.
_UNDO = """
UPDATE login_throttle SET failures = greatest(failures - 1, 0)
WHERE scope = %(scope)s AND key = %(key)s AND expires_at > now()
"""
_SUCCEEDED = """
WITH s AS (SELECT set_config('synchronous_commit', 'off', true)),
pair AS (DELETE FROM login_throttle WHERE scope = 'pair' AND key = %(pair)s)
INSERT INTO login_throttle (scope, key, failures, expires_at)
SELECT 'known', %(pair)s, 0, now() + make_interval(secs => %(known)s) FROM s
ON CONFLICT (scope, key) DO UPDATE SET expires_at = excluded.expires_at
"""

_PRUNE = """
DELETE FROM login_throttle WHERE (scope, key) IN (
    SELECT scope, key FROM login_throttle WHERE expires_at < now()
    ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)
"""


def _digest(text: str) -> str:
    """Rows hold digests, not emails or addresses (any text, NUL included, makes a fixed-size key)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """The keys of one log-in attempt: ``username`` as typed (any case), from ``address``."""

    account: str
    address: str
    pair: str

    @classmethod
    def of(cls, username: str, address: str) -> Attempt:
        name = username.strip().lower()
        return cls(_digest(name), _digest(address), _digest(f"{name}\n{address}"))


def _refusal(config: AuthConfig, counts: dict[str, tuple[int, float]], known: bool) -> RateLimited | None:
    checks = [("pair", config.login_failures_per_account_address, "login_failures_per_account_address",
               "for this account from your address")]
    if not known:
        checks += [
            ("account", config.login_failures_per_account, "login_failures_per_account", "for this account"),
            ("address", config.login_failures_per_address, "login_failures_per_address", "from your address"),
        ]
    over = [(scope, limit, name, what) for scope, limit, name, what in checks if limit and counts[scope][0] > limit]
    if not over:
        return None
    retry = max(1, max(math.ceil(counts[scope][1]) for scope, *_ in over))
    scope, limit, name, what = over[0]
    used = counts[scope][0] - 1  # this attempt is not counted
    return RateLimited(
        name, limit, used,
        f"too many failed log-ins {what} ({used:,}; the limit is {limit:,}); retry in {retry} s",
        retry_after=retry,
    )


async def begin(conn: psycopg.AsyncConnection, config: AuthConfig, attempt: Attempt) -> None:
    """Count ``attempt`` as a failure until it succeeds, or raise RateLimited, counting nothing.

    Call it first on a connection (it commits its own transaction, so no lock is held while the
    password is checked)."""
    async with conn.transaction():
        cur = await conn.execute(
            _ATTEMPT,
            {"window": config.login_failure_window_seconds, "account": attempt.account,
             "address": attempt.address, "pair": attempt.pair},
        )
        rows = await cur.fetchall()
        counts = {r[0]: (int(r[1]), float(r[2])) for r in rows}
        refusal = _refusal(config, counts, known=bool(rows[0][3]))
        if refusal is not None:
            raise refusal  # rolls the counts back


async def succeeded(conn: psycopg.AsyncConnection, attempt: Attempt) -> None:
    """Take back the count ``begin`` made, clear the pair's failures, and remember the pair as known."""
    async with conn.transaction():
        for scope, key in (("account", attempt.account), ("address", attempt.address)):
            await conn.execute(_UNDO, {"scope": scope, "key": key})
        await conn.execute(_SUCCEEDED, {"pair": attempt.pair, "known": KNOWN_FOR.total_seconds()})


async def prune(conn: psycopg.AsyncConnection, batch: int = PRUNE_BATCH) -> int:
    """Delete rows whose window (or known period) has ended; SKIP LOCKED keeps replicas apart."""
    cur = await conn.execute(_PRUNE, (batch,))
    return cur.rowcount
