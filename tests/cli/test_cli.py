"""The ``ragkeep`` command line, driven through typer's CliRunner against the real test server."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from typer.testing import CliRunner, Result

from ragkeep.cli.main import app
from ragkeep.client import Client
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, TestUser, free_port, register

runner = CliRunner()


def run(args: list[str], home: Path, **env: str) -> Result:
    """Invoke the CLI with no RAGKEEP_* variables from the outside and a wide terminal."""
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("RAGKEEP_")}
    environ.update({"RAGKEEP_HOME": str(home), "COLUMNS": "200"}, **env)
    return runner.invoke(app, args, env=environ)


@dataclass
class Ingested:
    user: TestUser
    home: Path
    docs: Path
    result: Result

    @property
    def login(self) -> list[str]:
        return ["--email", self.user.email, "--password", self.user.password]


@pytest.fixture(scope="module")
def ingested(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingested]:
    """One user who ran ``ragkeep ingest`` on a folder of real text, a bad PDF and an unknown file."""
    user = register(base_url, "cli")
    docs = tmp_path_factory.mktemp("docs")
    (docs / "pass.txt").write_text(topics["pass"], encoding="utf-8")
    (docs / "lambda.md").write_text("# Lambdas\n\n" + topics["lambda"].split("\n\n", 1)[1], encoding="utf-8")
    (docs / "break.json").write_text(json.dumps({"topic": "break", "text": topics["break"]}), encoding="utf-8")
    (docs / "continue.html").write_text(
        f"<html><head><title>The continue statement</title></head><body><p>{html.escape(topics['continue'])}</p>"
        "</body></html>",
        encoding="utf-8",
    )
    (docs / "nested").mkdir()
    (docs / "nested" / "if.txt").write_text(topics["if"], encoding="utf-8")
    (docs / ".hidden.txt").write_text(topics["while"], encoding="utf-8")
    (docs / "picture.xyz").write_bytes(b"\x89not a supported format")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n" + topics["del"].encode()[:200])
    home = tmp_path_factory.mktemp("cli-home")
    args = ["ingest", str(docs), "--base-url", base_url, "--metadata", '{"source": "cli-test"}']
    result = run([*args, "--email", user.email, "--password", user.password], home)
    yield Ingested(user, home, docs, result)
    user.client.close()


def test_ingest_reports_successes_failures_and_skips(ingested: Ingested, base_url: str) -> None:
    result = ingested.result
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "5 ingested, 0 queued, 0 duplicate, 1 failed, 1 skipped" in out
    failed = [line for line in out.splitlines() if "broken.pdf" in line]
    assert failed and "failed" in failed[0] and "(HTTP 422)" in failed[0]
    assert "picture.xyz" in result.stderr and "hidden" not in out
    for name in ("pass.txt", "lambda.md", "break.json", "continue.html", "if.txt"):
        assert any(name in line and "ingested" in line for line in out.splitlines()), name

    with Client(base_url, api_key=None) as client:
        client.access_token = ingested.user.client.headers["Authorization"].removeprefix("Bearer ")
        docs = client.documents.list()["results"]
    ok = {d["title"]: d for d in docs if d["ingestion_status"] == "success"}
    assert set(ok) >= {"pass.txt", "lambda.md", "break.json", "if.txt"}
    assert all(d["metadata"] == {"source": "cli-test"} for d in ok.values())


def test_ingest_again_reports_duplicates(ingested: Ingested, base_url: str) -> None:
    result = run(["ingest", str(ingested.docs / "pass.txt"), "--base-url", base_url, *ingested.login], ingested.home)
    assert result.exit_code == 0, result.output
    assert "0 ingested, 0 queued, 1 duplicate, 0 failed, 0 skipped" in result.stdout
    assert "already ingested as" in result.stdout


def test_search_prints_a_table(ingested: Ingested, base_url: str) -> None:
    result = run(
        ["search", "a null operation, useful as a placeholder", "--base-url", base_url, *ingested.login, "-n", "2"],
        ingested.home,
    )
    assert result.exit_code == 0, result.output
    assert "null operation" in result.stdout and "score" in result.stdout


def test_search_json_with_filters(ingested: Ingested, base_url: str) -> None:
    filters = json.dumps({"metadata.source": {"$eq": "cli-test"}})
    result = run(
        ["search", "anonymous functions", "--filters", filters, "--json", "--base-url", base_url, *ingested.login],
        ingested.home,
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["results"]["chunk_search_results"]
    assert hits and "anonymous functions" in hits[0]["text"]
    assert {h["owner_id"] for h in hits} == {str(ingested.user.id)}


def test_search_falls_back_to_the_admin_credentials_file(ingested: Ingested, base_url: str, tmp_path: Path) -> None:
    (tmp_path / "admin-password.txt").write_text(f"{ADMIN_EMAIL}\n{ADMIN_PASSWORD}\n", encoding="utf-8")
    filters = json.dumps({"user_id": {"$eq": str(ingested.user.id)}})
    result = run(["search", "conditional execution", "--filters", filters, "--json", "--base-url", base_url], tmp_path)
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "admin-password.txt") in result.stderr
    assert json.loads(result.stdout)["results"]["chunk_search_results"]


def test_search_with_an_api_key(ingested: Ingested, base_url: str) -> None:
    with Client(base_url) as client:
        client.access_token = ingested.user.client.headers["Authorization"].removeprefix("Bearer ")
        key = client.users.create_api_key(ingested.user.id)["results"]["api_key"]
    result = run(["search", "loop", "--json", "--base-url", base_url], ingested.home, RAGKEEP_API_KEY=key)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"]["chunk_search_results"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('{"user_id": ', "not valid JSON"), ("[1, 2]", "expected a JSON object")],
)
def test_bad_filters_exit_2(raw: str, expected: str, tmp_path: Path) -> None:
    result = run(["search", "anything", "--filters", raw, "--api-key", "unused"], tmp_path)
    assert result.exit_code == 2
    assert "--filters" in result.stderr and expected in result.stderr


def test_filters_the_server_refuses_exit_2(ingested: Ingested, base_url: str) -> None:
    filters = '{"user_id": {"$regex": "x"}}'
    result = run(["search", "anything", "--filters", filters, "--base-url", base_url, *ingested.login], ingested.home)
    assert result.exit_code == 2
    assert "$regex" in result.stderr and "(HTTP 422)" in result.stderr


def test_bad_metadata_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(topics["pass"], encoding="utf-8")
    result = run(["ingest", str(tmp_path / "a.txt"), "--metadata", "{oops", "--api-key", "unused"], tmp_path)
    assert result.exit_code == 2 and "--metadata" in result.stderr


def test_no_credentials_says_what_to_set(tmp_path: Path) -> None:
    result = run(["search", "anything", "--base-url", f"http://127.0.0.1:{free_port()}"], tmp_path)
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    for name in ("--api-key", "RAGKEEP_API_KEY", "--email", "RAGKEEP_EMAIL", "RAGKEEP_PASSWORD", "admin-password.txt"):
        assert name in message


def test_unreachable_server(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(topics["pass"], encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    result = run(["ingest", str(tmp_path / "a.txt"), "--base-url", url, "--api-key", "k"], tmp_path)
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert f"not reachable at {url}" in message and "ragkeep serve" in message


def test_serve_with_an_invalid_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server must not start with an invalid configuration")

    monkeypatch.setattr(uvicorn, "run", must_not_run)
    config = tmp_path / "ragkeep.toml"
    config.write_text('[app]\nprot = 7272\n\n[ingestion]\nchunk_size = "big"\n', encoding="utf-8")
    result = run(["serve", "--config", str(config)], tmp_path)
    assert result.exit_code == 2
    assert "app.prot: unknown key" in result.stderr and "ingestion.chunk_size" in result.stderr
    assert "Traceback" not in result.output
