"""The house's rules, checked: three programs, each in its own room, and
what they share at the top; imports run from the programs to the shared
modules, never between programs or back up."""

from __future__ import annotations

import ast
import os
import re

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT

PACKAGE = os.path.join(ROOT, "udpupper")
PROGRAMS = ("server", "client", "bench")


def imports_of(path: str) -> set[str]:
    """The udpupper modules ``path`` imports (``from udpupper.x import y``
    counts ``udpupper.x.y`` when that is a module, else ``udpupper.x``)."""
    with open(path) as source:
        tree = ast.parse(source.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {
        name
        for name in found
        if name.split(".")[0] == "udpupper"
        and (os.path.exists(module_path(name)) or name.count(".") <= 1)
    }


def module_path(name: str) -> str:
    base = os.path.join(ROOT, *name.split("."))
    return base + ".py" if os.path.exists(base + ".py") else os.path.join(base, "__init__.py")


def modules() -> dict[str, str]:
    """Every module of the package, by dotted name."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def program_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PROGRAMS else None


@tiers.unit
class LayoutTests(unittest.TestCase):
    def test_no_program_imports_another(self) -> None:
        for name, path in modules().items():
            own = program_of(name)
            for imported in imports_of(path):
                other = program_of(imported) or (
                    imported.split(".")[1]
                    if imported.count(".") == 1 and imported.split(".")[1] in PROGRAMS
                    else None
                )
                if other is not None:
                    self.assertEqual(other, own, f"{name} imports {imported}")

    def test_every_program_has_its_room(self) -> None:
        for program in PROGRAMS:
            self.assertTrue(os.path.exists(os.path.join(PACKAGE, program, "__init__.py")))

    def test_tests_mirror_the_modules(self) -> None:
        """Each module's tests are where the module is, under tests/."""
        for name in modules():
            parts = name.split(".")[1:]
            if not parts or parts[-1].startswith("_") or parts == ["__init__"]:
                continue
            if parts[-1] in PROGRAMS or parts[-1] in ("protections", "workers"):
                continue  # a package, not a module
            folder = os.path.join(ROOT, "tests", *parts[:-1])
            self.assertTrue(os.path.isdir(folder), f"no tests/{'/'.join(parts[:-1])}")

    def test_the_bench_scripts_need_nothing_from_the_tests(self) -> None:
        """A clone without tests/ (or a bench script copied out) still runs."""
        folder = os.path.join(ROOT, "bench")
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if name.endswith((".c", ".md")) or "__pycache__" in path:
                    continue
                with open(path, errors="replace") as source:
                    text = source.read()
                self.assertNotRegex(text, r"(?m)^\s*(from tests[. ]|import tests)", path)

    def test_every_bench_script_finds_the_venv_first(self) -> None:
        """Each script imports bench/reference.py (which runs it again in
        the clone's .venv where udpupper is not importable) before udpupper."""
        folder = os.path.join(ROOT, "bench")
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or "." in name:
                continue  # the scripts have no extension
            with open(path) as source:
                imports = re.findall(r"(?m)^(?:from (\S+) import|import (\S+))", source.read())
            modules = [a or b for a, b in imports if (a or b) != "__future__"]
            first_ours = next(
                (index for index, module in enumerate(modules) if module.startswith("udpupper")),
                len(modules),
            )
            self.assertIn("reference", modules[:first_ours], path)

    def test_no_module_past_400_lines(self) -> None:
        for name, path in modules().items():
            with open(path) as source:
                lines = sum(1 for _ in source)
            self.assertLessEqual(lines, 400, name)
