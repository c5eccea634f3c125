"""The client library is its own distribution (``packaging/client/pyproject.toml``): it holds
``client`` and the wire contract ``schemas`` and imports nothing of the server."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "packaging" / "client" / "pyproject.toml"
#: Import name of each distribution the client package depends on.
IMPORT_NAMES = {"aiohttp": "aiohttp", "msgspec": "msgspec", "structlog": "structlog",
                "vodozemac": "vodozemac", "cryptography": "cryptography", "pillow": "PIL"}
SERVER = ("gateway", "router", "storage_worker", "push_worker", "runtime", "infra", "balancer",
          "presence", "control", "bench", "chaos")


def test_importing_the_client_loads_no_server_module() -> None:
    code = ("import sys, client, client.sdk, client.e2ee, client.cli, client.crypto.machine, "
            "client.crypto.verify; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split())
    assert {"client", "schemas", "vodozemac"} <= loaded
    assert not loaded & set(SERVER), loaded & set(SERVER)


def test_the_package_lists_every_client_module_and_its_dependencies() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    inits = [*(ROOT / "client").rglob("__init__.py"), *(ROOT / "schemas").rglob("__init__.py")]
    assert packages == {".".join(p.relative_to(ROOT).parent.parts) for p in inits}
    declared = {IMPORT_NAMES[d.split(">")[0].split("[")[0]]
                for d in project["project"]["dependencies"]}
    imported: set[str] = set()
    for package in ("client", "schemas"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"client", "schemas"}
    assert third_party == declared
