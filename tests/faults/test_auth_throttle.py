"""Issue 10, finding 7: failed log-ins are throttled, across replicas, with ``Retry-After``.

Before, 200 wrong passwords in 27 s were all answered 401 and the right one then worked at once.
Two replicas (ServerThreads) share a database of their own with small limits and a short window.
Addresses are set with ``X-Forwarded-For``, which uvicorn takes from 127.0.0.1 (its default
trusted proxy), as from a reverse proxy in front of ragkeep.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from ragkeep.config import Settings
from tests.support import ServerThread, make_settings, own_server

PAIR_LIMIT = 3  # failures per account and address
ACCOUNT_LIMIT = 6  # per account, from addresses it has not logged in from
ADDRESS_LIMIT = 8  # per address, over accounts it has not logged in to
WINDOW = 10  # seconds: ample for a few argon2 checks on a loaded machine


@dataclass
class Replicas:
    a: str
    b: str


@pytest.fixture(scope="module")
def replicas(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    auth = {
        "login_failures_per_account_address": PAIR_LIMIT,
        "login_failures_per_account": ACCOUNT_LIMIT,
        "login_failures_per_address": ADDRESS_LIMIT,
        "login_failure_window_seconds": WINDOW,
    }
    with own_server(pg_url, tmp_path_factory.mktemp("auth-a"), "auth", auth=auth) as a:
        settings: Settings = make_settings(tmp_path_factory.mktemp("auth-b"), a.database_url, auth=auth)
        with ServerThread(settings) as b:
            yield Replicas(a.base_url, b.base_url)


def address() -> str:
    """A fresh client address (198.18.0.0/15, for benchmarks), so tests and runs never share counters."""
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"


@dataclass
class Account:
    email: str
    password: str


def account(base_url: str) -> Account:
    email, password = f"throttle-{uuid.uuid4().hex[:10]}@ragkeep.test", f"pw-{uuid.uuid4().hex}"
    r = httpx.post(f"{base_url}/v3/users", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    return Account(email, password)


def login(base_url: str, email: str, password: str, addr: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v3/users/login",
        data={"username": email, "password": password},
        headers={"X-Forwarded-For": addr},
        timeout=60,
    )


def fail(base_url: str, who: Account, addr: str, times: int) -> None:
    for _ in range(times):
        r = login(base_url, who.email, "not-the-password", addr)
        assert r.status_code == 401, r.text


def assert_throttled(r: httpx.Response, limit_name: str) -> int:
    assert r.status_code == 429, r.text
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= WINDOW
    detail = r.json()["detail"]
    assert detail["limit_name"] == limit_name and "retry in" in detail["message"]
    return retry


def test_the_right_password_is_refused_after_too_many_wrong_ones(replicas: Replicas) -> None:
    user, bystander = account(replicas.a), account(replicas.a)
    attacker, elsewhere = address(), address()
    fail(replicas.a, user, attacker, PAIR_LIMIT)
    assert_throttled(login(replicas.a, user.email, user.password, attacker), "login_failures_per_account_address")
    assert_throttled(login(replicas.b, user.email, user.password, attacker), "login_failures_per_account_address")
    # Neither the account from another address (below its own limit) nor anyone else is affected.
    assert login(replicas.a, user.email, user.password, elsewhere).status_code == 200
    assert login(replicas.b, bystander.email, bystander.password, address()).status_code == 200


def test_unknown_accounts_are_throttled_alike(replicas: Replicas) -> None:
    """Otherwise a 429 would tell which emails exist."""
    ghost, addr = Account(f"ghost-{uuid.uuid4().hex[:10]}@ragkeep.test", "whatever-1"), address()
    fail(replicas.a, ghost, addr, PAIR_LIMIT)
    assert_throttled(login(replicas.a, ghost.email, ghost.password, addr), "login_failures_per_account_address")


def test_counts_are_shared_by_replicas(replicas: Replicas) -> None:
    user, addr = account(replicas.a), address()
    for i in range(PAIR_LIMIT):
        fail(replicas.a if i % 2 == 0 else replicas.b, user, addr, 1)
    assert_throttled(login(replicas.b, user.email, user.password, addr), "login_failures_per_account_address")
    assert_throttled(login(replicas.a, user.email, user.password, addr), "login_failures_per_account_address")


def test_the_lockout_ends_with_its_window(replicas: Replicas) -> None:
    user, addr = account(replicas.a), address()
    fail(replicas.b, user, addr, PAIR_LIMIT)
    retry = assert_throttled(login(replicas.a, user.email, user.password, addr), "login_failures_per_account_address")
    time.sleep(retry + 0.5)
    assert login(replicas.a, user.email, user.password, addr).status_code == 200
    # A success clears the pair's failures: one typo now is not a lockout.
    fail(replicas.a, user, addr, PAIR_LIMIT - 1)
    assert login(replicas.b, user.email, user.password, addr).status_code == 200


def test_concurrent_guesses_get_no_more_than_the_limit(replicas: Replicas) -> None:
    """Attempts are counted before argon2 runs, so a burst cannot slip past the limit."""
    user, addr = account(replicas.a), address()
    urls = [replicas.a, replicas.b] * 8
    with ThreadPoolExecutor(len(urls)) as pool:
        codes = sorted(pool.map(lambda u: login(u, user.email, "not-the-password", addr).status_code, urls))
    assert codes == [401] * PAIR_LIMIT + [429] * (len(urls) - PAIR_LIMIT)


def test_many_addresses_lock_an_account_for_new_addresses_only(replicas: Replicas) -> None:
    user, home = account(replicas.a), address()
    assert login(replicas.a, user.email, user.password, home).status_code == 200  # home becomes known
    for _ in range(ACCOUNT_LIMIT // (PAIR_LIMIT - 1)):
        fail(replicas.b, user, address(), PAIR_LIMIT - 1)  # never the pair limit
    assert_throttled(login(replicas.a, user.email, user.password, address()), "login_failures_per_account")
    assert login(replicas.b, user.email, user.password, home).status_code == 200


def test_one_address_guessing_many_accounts_is_throttled(replicas: Replicas) -> None:
    addr = address()
    regular = account(replicas.a)
    assert login(replicas.a, regular.email, regular.password, addr).status_code == 200  # known there
    for _ in range(ADDRESS_LIMIT):
        ghost = Account(f"spray-{uuid.uuid4().hex[:10]}@ragkeep.test", "whatever-1")
        fail(replicas.a, ghost, addr, 1)
    newcomer = account(replicas.b)
    assert_throttled(login(replicas.b, newcomer.email, newcomer.password, addr), "login_failures_per_address")
    assert login(replicas.b, newcomer.email, newcomer.password, address()).status_code == 200
    assert login(replicas.a, regular.email, regular.password, addr).status_code == 200
