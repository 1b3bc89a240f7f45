"""One version, said alike everywhere: the package's ``__version__`` (which
setup.cfg reads, and the three programs' ``--version`` print), NEWS.md's
newest heading with its date, and every ``udpupper X.Y.Z`` the docs quote."""

from __future__ import annotations

import datetime
import glob
import os
import re

from twisted.trial import unittest

from tests import tiers
from tests.processes import ROOT
from udpupper import __version__


@tiers.unit
class VersionTests(unittest.TestCase):
    def test_the_version_is_a_release_or_a_dev_one(self) -> None:
        self.assertRegex(__version__, r"^\d+\.\d+\.\d+(\.dev\d+)?$")

    def test_setup_cfg_reads_it_from_the_package(self) -> None:
        with open(os.path.join(ROOT, "setup.cfg")) as config:
            self.assertIn("version = attr: udpupper.__version__", config.read())

    def test_news_heads_with_it_and_its_date(self) -> None:
        with open(os.path.join(ROOT, "NEWS.md")) as news:
            heading = next(line for line in news if line.startswith("## "))
        if __version__.endswith(tuple(f".dev{n}" for n in range(100))):
            self.assertEqual(heading.strip(), f"## {__version__} (in progress)")
            return
        match = re.fullmatch(
            rf"## {re.escape(__version__)} \((\d{{4}}-\d\d-\d\d)\)", heading.strip()
        )
        self.assertIsNotNone(match, heading)
        datetime.date.fromisoformat(match.group(1))  # a real date

    def test_the_docs_quote_it(self) -> None:
        pages = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
        for page in pages:
            with open(page) as text:
                said = text.read()
            quoted = re.findall(r"\budpupper (\d+\.\d+\.\d+\S*)`", said)
            quoted += re.findall(r"\budpupper-(\d+\.\d+\.\d+)(?:\.tar|-cp)", said)
            for version in quoted:
                self.assertEqual(version, __version__, page)
