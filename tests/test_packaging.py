"""What a user installs: the wheel and the sdist carry the plugin and the LICENSE."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile

from twisted.trial import unittest

from tests import tiers
from tests.processes import ROOT, copy_of_the_tree


@tiers.system
class DistributionTests(unittest.TestCase):
    def build(self, *command: str) -> str:
        """Build in a copy of the tree (no network: no build isolation)."""
        folder, tree = copy_of_the_tree(self)
        out = os.path.join(folder, "dist")
        result = subprocess.run(
            [sys.executable, *command, "-d" if "sdist" in command else "-w", out],
            cwd=tree,
            capture_output=True,
            timeout=300,
        )
        if result.returncode:
            raise unittest.SkipTest(f"cannot build here: {result.stderr[-300:]!r}")
        (built,) = os.listdir(out)
        return os.path.join(out, built)

    def test_wheel(self) -> None:
        wheel = self.build(
            "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "."
        )
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/udpupper_plugin.py", names)
        packages = {
            os.path.relpath(folder, ROOT)
            for folder, _, files in os.walk(os.path.join(ROOT, "udpupper"))
            if "__init__.py" in files
        }
        for package in packages:  # every package, listed in setup.cfg
            self.assertIn(f"{package}/__init__.py", names)
        for module in (
            "udpupper/server/tap.py",
            "udpupper/server/protections/ratelimit.py",
            "udpupper/server/workers/parent.py",
            "udpupper/client/cli.py",
            "udpupper/bench/cli.py",
        ):
            self.assertIn(module, names)  # every package, listed in setup.cfg
        self.assertTrue(
            any(
                name.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in name for name in names
            ),
            names,
        )
        self.assertNotIn("twisted/__init__.py", names)

    def test_sdist(self) -> None:
        sdist = self.build("setup.py", "--quiet", "sdist")
        names = [name.split("/", 1)[-1] for name in tarfile.open(sdist).getnames()]
        for expected in (
            "LICENSE",
            "README.md",
            "NEWS.md",
            "docs/server.md",
            "twisted/plugins/udpupper_plugin.py",
            "udpupper/_batch.c",
            "udpupper/server/protections/_ratelimit.c",
            "udpupper/server/protections/_sources.c",
            "udpupper/server/protections/_loops.c",
            "udpupper/server/protections/_table.h",
            "contrib/nginx/transparent-routing",
            "tests/client/test_ping.py",
            "tests/server/protections/__init__.py",
            "bench/compare",
            "bench/servers/limit.c",
            "Makefile",
        ):
            self.assertIn(expected, names)
        self.assertFalse([name for name in names if "__pycache__" in name or name.endswith(".so")])
