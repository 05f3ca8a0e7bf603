"""The client installs and works without the server's dependencies.

The `ceasefire` client runs here in a subprocess whose imports of the `server` and `maps`
extras (read from pyproject.toml, with what they pull in that the client does not) raise
ImportError, as on a machine where only `pip install ceasefire-ledger` ran. With CI=true the
wheel is also built and installed into a fresh virtualenv with its own dependencies only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest

from clients import extras
from ledger import keys
from tests.conftest import RunningLedger

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "incident-arm.yaml"


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised: `psycopg[binary]>=3.2` -> psycopg."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def _closure(names: set[str]) -> set[str]:
    """The distributions `names` need, transitively, as installed here (extras excluded)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _extra_modules() -> set[str]:
    """Top-level import names of what the extras bring and the client's own dependencies do
    not: what a client-only install lacks."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    client = _closure({_name(r) for r in project["dependencies"]})
    extra = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    lacking = _closure(extra) - client
    modules = {
        module
        for module, dists in metadata.packages_distributions().items()
        if {_name(d) for d in dists} & lacking and not module.startswith("_")
    }
    assert {"sqlalchemy", "geopandas", "matplotlib", "shapely", "numpy"} <= modules
    return modules


BLOCKER = """
import importlib.abc, sys
BLOCKED = frozenset({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (client-only)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _client(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`ceasefire ARGS` (or `code`) in a fresh interpreter without the extras' modules."""
    blocked = sorted(_extra_modules())
    body = code or f"import sys; from clients.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", BLOCKER.format(blocked=blocked) + body],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_extras_table_names_every_module_the_extras_bring() -> None:
    """clients/extras.py turns an ImportError into "needs the server extra": it must know
    the import names of every direct dependency of the extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    names = {
        module
        for module, dists in metadata.packages_distributions().items()
        if {_name(d) for d in dists} & direct and not module.startswith("_")
    }
    assert names <= set(extras.MODULES), names - set(extras.MODULES)


def test_starting_the_command_loads_no_server_module(tmp_path: Path) -> None:
    """`ceasefire --help` and `submit --help` build every parser: none of that imports the
    server's libraries, nor the server's own modules."""
    heavy = [
        *sorted(_extra_modules()),
        "ledger.storage",
        "ledger.service",
        "ledger.serving.grpc_server",
        "geo.borders",
        "geo.validate",
    ]
    code = (
        "import sys, contextlib, io\n"
        "import grpc\n"
        "before = set(sys.modules)  # grpc itself looks for its optional packages\n"
        "from clients.cli import main\n"
        "for argv in (['--help'], ['submit', '--help'], ['serve', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        f"print(sorted(m for m in set(sys.modules) - before if m.partition('.')[0] in {heavy!r} "
        f"or m in {heavy!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_client_works_with_only_its_own_dependencies(
    running: RunningLedger, tmp_path: Path
) -> None:
    """Import, sign, submit, read the timeline, prove inclusion: all without the extras; a
    server command says which extra it needs."""
    imported = _client(cwd=tmp_path, code="import clients.client, clients.cli; print('ok')")
    assert imported.stdout.strip() == "ok", imported.stderr
    helped = _client("--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout

    key = tmp_path / "arm-monitor.key"
    keys.write_private(key, running.parties.arm_monitor)
    shutil.copy(EXAMPLE, tmp_path / "incident.yaml")
    server = ("--server", running.address)
    submitted = _client(
        "submit", *server, "--key", str(key), "incident.yaml", "--json", cwd=tmp_path
    )
    assert submitted.returncode == 0, submitted.stderr
    assert running.client.checkpoint().tree_size == 2  # the trust root, then the report

    timeline = _client("timeline", *server, "--json", cwd=tmp_path)
    assert timeline.returncode == 0, timeline.stderr
    (shown,) = json.loads(timeline.stdout)
    assert (shown["index"], shown["party"]) == (1, "ARM")

    proof = _client("proof", "inclusion", *server, "--index", "1", "--json", cwd=tmp_path)
    assert proof.returncode == 0, proof.stderr
    assert json.loads(proof.stdout)["verified"] is True

    served = _client("serve", "--data-dir", str(tmp_path / "var"), cwd=tmp_path)
    assert served.returncode == 1
    assert served.stderr.strip() == (
        "error: ceasefire serve needs the server extra: pip install 'ceasefire-ledger[server]'"
    )
    assert "Traceback" not in served.stderr


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="builds a wheel, needs PyPI: CI only")
def test_the_wheel_installs_and_runs_without_the_extras(
    running: RunningLedger, tmp_path: Path
) -> None:
    """The real thing: the wheel in a fresh virtualenv, with its own dependencies only."""
    dist = tmp_path / "dist"
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in UV
    assert uv is not None, "uv is needed to build the wheel"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    )
    installed = {_name(p["name"]) for p in json.loads(listed.stdout)}
    assert not installed & {"sqlalchemy", "geopandas", "shapely", "matplotlib", "numpy"}

    ceasefire = str(env_dir / "bin" / "ceasefire")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    helped = subprocess.run(
        [ceasefire, "--help"], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    key = tmp_path / "arm-monitor.key"
    keys.write_private(key, running.parties.arm_monitor)
    shutil.copy(EXAMPLE, tmp_path / "incident.yaml")
    submitted = subprocess.run(
        [ceasefire, "submit", "--server", running.address, "--key", str(key), "incident.yaml"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert running.client.checkpoint().tree_size == 2


def test_the_installed_libraries_are_compiled_to_bytecode() -> None:
    """`uv sync` compiles what it installs (pyproject.toml, [tool.uv]): with
    PYTHONDONTWRITEBYTECODE set, as on CI, nothing else would, and every process (each
    `ceasefire` command, each audit worker) compiled geopandas, pandas, grpc ... anew."""
    import importlib.util

    import geopandas
    import grpc as grpc_module
    import sqlalchemy

    for module in (geopandas, grpc_module, sqlalchemy):
        assert module.__file__ is not None
        cached = Path(importlib.util.cache_from_source(module.__file__))
        assert cached.is_file(), f"{module.__name__} is not compiled: {cached} is missing"
