"""The client installs alone: the ``ragkeep-client`` wheel (clients/python) in a fresh venv with
nothing but httpx, imported and used there, with none of the server's packages present.

The wheel is built from this checkout and installed by pip (httpx from pip's cache or PyPI).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ragkeep.client
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = ROOT / "clients" / "python"
CLIENT_SOURCE = Path(ragkeep.client.__file__).parent

#: Run in the venv: the client imports, no server package does, and it works against a server.
PROBE = """
import importlib.metadata, importlib.resources, importlib.util, json, re, sys
import ragkeep, ragkeep.client
from ragkeep.client import AsyncClient, Client, RagkeepError

def name(requirement):
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()

def closure(dist, seen):
    # The installed distributions `dist` requires, recursively (markers aside).
    try:
        requirements = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:  # e.g. a backport for an older Python
        return seen
    for requirement in requirements:
        if "extra ==" not in requirement and name(requirement) not in seen:
            seen.add(name(requirement))
            closure(name(requirement), seen)
    return seen

servers = ["ragkeep.api", "ragkeep.db", "ragkeep.search", "ragkeep.config", "fastapi", "psycopg"]
client = Client(sys.argv[1], api_key="unused")
out = {
    "file": ragkeep.client.__file__,
    "namespace": getattr(ragkeep, "__file__", None) is None,
    "found": [module for module in servers if importlib.util.find_spec(module) is not None],
    "loaded": sorted(m for m in sys.modules if m.startswith("ragkeep.") and not m.startswith("ragkeep.client")),
    "dists": sorted(name(d.metadata["Name"]) for d in importlib.metadata.distributions()),
    "requires": sorted(name(r) for r in importlib.metadata.requires("ragkeep-client")),
    "closure": sorted(closure("ragkeep-client", {"ragkeep-client"})),
    "typed": importlib.resources.files("ragkeep.client").joinpath("py.typed").is_file(),
    "base_url": client.base_url,
}
if len(sys.argv) > 2:
    with Client(sys.argv[1], email=sys.argv[2], password=sys.argv[3]) as logged_in:
        out["health"] = logged_in.health()
        out["me"] = logged_in.users.me()["results"]["email"]
print(json.dumps(out))
"""


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the client wheel installed (and what pip resolves for it: httpx).
    ``baseline.json`` beside it lists what the venv held before (pip; setuptools on 3.11)."""
    work = tmp_path_factory.mktemp("client-venv")
    wheels = work / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(CLIENT_PROJECT)], work)
    (wheel,) = wheels.glob("ragkeep_client-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], work)
    python = venv / "bin" / "python"
    listed = _run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], work)
    baseline = sorted(re.sub(r"[-_.]+", "-", d["name"]).lower() for d in json.loads(listed))
    (venv / "baseline.json").write_text(json.dumps(baseline))
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)], work)
    return python


def probe(python: Path, *args: str) -> dict:
    # cwd outside the checkout: the repository's src/ must not be importable by accident.
    return json.loads(_run([str(python), "-c", PROBE, *args], python.parent))


def test_the_client_imports_alone_in_a_venv_with_httpx_only(client_venv: Path) -> None:
    out = probe(client_venv, "http://127.0.0.1:1")
    assert str(client_venv.parents[1]) in out["file"], "imported from the venv, not the checkout"
    assert out["namespace"], "ragkeep-client must not ship a ragkeep/__init__.py (it would shadow the server's)"
    assert out["found"] == [], f"server packages importable in the client's venv: {out['found']}"
    assert out["loaded"] == [], f"the client imported server modules: {out['loaded']}"
    assert out["requires"] == ["httpx"]
    baseline = set(json.loads((client_venv.parents[1] / "baseline.json").read_text()))
    came_along = set(out["dists"]) - baseline
    assert "ragkeep-client" in came_along
    assert came_along <= set(out["closure"]), f"more than httpx came along: {came_along - set(out['closure'])}"
    assert out["typed"], "the client wheel carries py.typed"
    assert out["base_url"] == "http://127.0.0.1:1"


def test_the_installed_client_talks_to_a_server(client_venv: Path, base_url: str) -> None:
    out = probe(client_venv, base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert out["health"]["results"]["message"] == "ok"
    assert out["me"] == ADMIN_EMAIL


def test_the_client_source_imports_no_server_package() -> None:
    """What the wheel holds is all it needs: ragkeep.client imports only ragkeep.client.*."""
    outside = []
    for path in sorted(CLIENT_SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            server = [n for n in names if n.split(".")[0] == "ragkeep" and not n.startswith("ragkeep.client")]
            outside += [f"{path.name}: {n}" for n in server]
    assert outside == []
