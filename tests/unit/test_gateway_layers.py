"""The gateway's layers, checked on its import graph (every ``import`` anywhere in a module,
functions included, read with ``ast``): the transports (``ws``, ``http``, ``nats_api``) import
the handlers, never each other; the handlers import no transport (nor aiohttp); the shared
modules (``auth``) import neither; only ``gateway.service``, the one composition root,
imports everything, and nothing but ``__main__`` imports it."""

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).parents[2] / "gateway"
TRANSPORTS = frozenset({"ws", "http", "nats_api"})
#: Top-level modules: the root, its entry point, and what both transports share.
ROOT = "service"
SHARED = frozenset({"auth"})
TOP_LEVEL = frozenset({"__init__", "__main__", ROOT, *SHARED})


def layer(module: str) -> str:
    """The layer of a ``gateway.*`` module: a transport, ``handlers``, ``shared``, ``root``,
    ``main``, ``package`` (``gateway`` itself) or ``unplaced``."""
    parts = module.split(".")
    assert parts[0] == "gateway"
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in TRANSPORTS or head == "handlers":
        return head
    if len(parts) == 2 and head in SHARED:
        return "shared"
    if parts[1:] == [ROOT]:
        return "root"
    if parts[1:] == ["__main__"]:
        return "main"
    return "unplaced"


#: Which layers each layer may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "shared": frozenset({"package"}),
    "handlers": frozenset({"shared", "package"}),
    **{transport: frozenset({"handlers", "shared", "package"}) for transport in TRANSPORTS},
    "root": frozenset({"handlers", "shared", "package", *TRANSPORTS}),
    "main": frozenset({"root", "package"}),
    "package": frozenset(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """The ``gateway.*`` modules ``source`` imports (relative imports resolved)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            if target == "gateway":  # ``from gateway import ws`` imports the subpackage
                found.update(f"gateway.{alias.name}" for alias in node.names)
    return {name for name in found if name == "gateway" or name.startswith("gateway.")}


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Each import of ``sources`` (module -> (source, is package)) that breaks a layer rule,
    and each module that belongs to no layer."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        own = layer(module)
        if own == "unplaced":
            found.append(f"{module} belongs to no layer")
            continue
        for target in sorted(imports(module, source, is_package)):
            theirs = layer(target)
            if theirs != own and theirs not in ALLOWED[own]:
                found.append(f"{module} ({own}) imports {target} ({theirs})")
    return found


def gateway_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(), path.name == "__init__.py")
            for path in GATEWAY.rglob("*.py")}


def test_the_gateway_keeps_its_layers() -> None:
    sources = gateway_sources()
    assert {layer(module) for module in sources} >= {"handlers", "root", *TRANSPORTS}
    assert violations(sources) == []


def frameworks(source: str) -> set[str]:
    """The top-level packages of the transport frameworks ``source`` imports."""
    names = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names} & TRANSPORT_FRAMEWORKS


#: What only transports touch: the HTTP and WebSocket server.
TRANSPORT_FRAMEWORKS = frozenset({"aiohttp"})


def test_the_handlers_import_no_transport_framework() -> None:
    assert {module: frameworks(source) for module, (source, _) in gateway_sources().items()
            if layer(module) == "handlers" and frameworks(source)} == {}
    assert frameworks("from aiohttp import web\nimport aiohttp.web_ws") == {"aiohttp"}


def test_every_top_level_module_is_placed() -> None:
    top = {path.stem for path in GATEWAY.glob("*.py")}
    packages = {path.name for path in GATEWAY.iterdir()
                if path.is_dir() and (path / "__init__.py").exists()}
    assert top == TOP_LEVEL
    assert packages == {*TRANSPORTS, "handlers"}


@pytest.mark.parametrize(("module", "source", "broken"), [
    ("gateway.handlers.x", "from gateway.ws.connection import Connection", "handlers"),
    ("gateway.handlers.x", "def f():\n    import gateway.http.routes\n", "handlers"),
    ("gateway.http.rest", "from gateway.ws.hub import DeviceHub", "http"),
    ("gateway.ws.sockets", "from ..http import problems", "ws"),
    ("gateway.ws.sockets", "from gateway import http", "ws"),
    ("gateway.nats_api.x", "from gateway.service import Gateway", "nats_api"),
    ("gateway.auth", "from gateway.handlers.limits import Limits", "shared"),
    ("gateway.features", "import msgspec", None),
])
def test_the_check_sees_each_kind_of_breach(module: str, source: str,
                                            broken: str | None) -> None:
    found = violations({module: (source, False)})
    assert len(found) == 1
    if broken is None:
        assert found == [f"{module} belongs to no layer"]
    else:
        assert f"({broken}) imports" in found[0]


@pytest.mark.parametrize(("module", "source"), [
    ("gateway.http.rest", "from gateway.handlers.messaging import Messaging"),
    ("gateway.http.rest", "from .responses import json_response"),
    ("gateway.ws.connection", "from gateway.auth import Identity"),
    ("gateway.service", "from gateway.ws.sockets import SocketServer\n"
                        "from gateway.http.routes import ROUTES"),
    ("gateway.__main__", "from gateway.service import Gateway"),
])
def test_the_check_allows_the_layered_imports(module: str, source: str) -> None:
    assert violations({module: (source, False)}) == []
