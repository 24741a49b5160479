"""The repository's layers: imports point down only, private internals stay in the hooks modules.

Layers, bottom up (docs/design.md draws them): shared values (errors, config, assets, the
media-file generator); ``http`` (pure protocol); ``stats``; ``server`` (Hypercorn and
Quart-Trio); the apps ``origin`` and ``proxy``; ``cli`` and ``demo``. A module imports from its
own layer or below, never above, and the two apps never import each other. Outside the
package, tests and benchmarks never import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / "src" / "trio_range"

LAYERS = {
    "errors": 0,
    "config": 0,
    "assets": 0,
    "media_files": 0,
    "serving_loop_settings": 0,
    "http": 1,
    "stats": 2,
    "server": 3,
    "origin": 4,
    "proxy": 4,
    "cli": 5,
    "demo": 5,
    "__init__": 5,
}

# Libraries of I/O and frameworks: the pure protocol layer imports none of them.
NOT_PURE = {"trio", "quart", "quart_trio", "hypercorn", "httpx", "httpx2", "httpcore2", "h11"}
NOT_PURE |= {"werkzeug", "os", "socket", "redis", "prometheus_client"}

# Undocumented modules of the stack: imported only by the hooks modules.
INTERNAL_MODULES = (
    "hypercorn.trio",
    "hypercorn.protocol",
    "hypercorn.utils",
    "hypercorn.events",
    "quart.asgi",
    "quart_trio.asgi",
    "httpcore2",
)
HOOKS_MODULES = {
    "trio_range.server._hypercorn_hooks",
    "trio_range.server._quart_hooks",
    "trio_range.server._h11_hooks",
    "trio_range.server._werkzeug_hooks",
    "trio_range.proxy._httpx_hooks",
}

MAX_MODULE_LINES = 400


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((".".join(("trio_range", *parts)), path))
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down_only(module: str, path: Path) -> None:
    upward = [
        name
        for name in _imports(path)
        if name.startswith("trio_range.")
        and name.count(".") >= 1
        and name.split(".")[1] in LAYERS
        and (
            _layer(name) > _layer(module)
            or {name.split(".")[1], module.split(".")[1]} == {"origin", "proxy"}
        )
    ]
    assert upward == []


@pytest.mark.parametrize(
    ("module", "path"), [(m, p) for m, p in MODULES if m.startswith("trio_range.http")]
)
def test_the_protocol_layer_imports_no_io(module: str, path: Path) -> None:
    assert [name for name in _imports(path) if name.split(".")[0] in NOT_PURE] == []


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_only_hooks_modules_reach_into_the_stack(module: str, path: Path) -> None:
    if module in HOOKS_MODULES:
        return
    internal = [name for name in _imports(path) if name.startswith(INTERNAL_MODULES)]
    private = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
            if not own and not node.attr.startswith("__"):
                private.append(ast.unparse(node))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
            and not str(node.args[1].value).startswith("__")
        ):
            private.append(ast.unparse(node))
    assert (internal, private) == ([], [])


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_is_over_400_lines(module: str, path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_servers_load_no_redis_code_without_a_redis_backend() -> None:
    # The store factory imports the Redis store (and redis-py, 5 MiB of RSS) only when asked.
    code = (
        "import sys, trio_range.origin, trio_range.proxy, trio_range.cli; "
        "print(sorted(m for m in sys.modules if m == 'redis' or m.endswith('redis_store')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_proxy_without_a_cache_or_a_scrape_loads_neither() -> None:
    # Issue 14: the proxy's RSS is mostly what it imports. The slice cache is imported only
    # when cache_dir is set, prometheus_client (~1 MiB) only by the first /metrics scrape.
    code = (
        "import sys, trio_range.proxy, trio_range.cli\n"
        "from trio_range.config import ProxyConfig\n"
        "from trio_range.proxy import create_app\n"
        "create_app(ProxyConfig(upstream='http://127.0.0.1:9'))\n"
        "lazy = ('trio_range.proxy.cache', 'prometheus_client', 'trio_range.stats.prometheus')\n"
        "print(sorted(m for m in sys.modules if m.startswith(lazy)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_benchmarks_and_tests_do_not_import_each_other() -> None:
    # Tests check and benchmarks measure: a change to a test helper must not move a figure,
    # and `make test` must not depend on code that only `make bench` runs. What both need
    # comes from src/ (or is written twice, small).
    crossings = []
    for tree, forbidden in (("tests", "benchmarks"), ("benchmarks", "tests")):
        for path in sorted((REPOSITORY / tree).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                crossings += [
                    f"{path.relative_to(REPOSITORY)}:{node.lineno} imports {module}"
                    for module in modules
                    if module.partition(".")[0] == forbidden
                ]
    assert crossings == []


def test_importing_the_protocol_layer_loads_no_io_library() -> None:
    # The direct-import check above misses an import made through a lower layer: this one
    # loads every http/ module in a fresh interpreter and looks at what came with them.
    modules = [m for m, _ in MODULES if m.startswith("trio_range.http.")]
    code = (
        "import importlib, sys; before = set(sys.modules); "  # os is there at start-up
        f"[importlib.import_module(m) for m in {modules!r}]; "
        "print(sorted(m for m in set(sys.modules) - before "
        f"if m.partition('.')[0] in {sorted(NOT_PURE)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
