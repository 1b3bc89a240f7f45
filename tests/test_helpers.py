"""The C helpers the tests run against, said where every runner shows it."""

from __future__ import annotations

import sys

from twisted.trial import unittest

from tests import tiers
from tests.helpers import banner, missing


@tiers.unit
class HelpersBuiltTests(unittest.TestCase):
    def test_built_for_this_python(self) -> None:
        """Skipped, with the reason in the runner's summary, where they are
        not: trial and pytest both list skips at the end."""
        if missing():
            sys.stderr.write(banner() + "\n")
            raise unittest.SkipTest(banner())
        self.assertIn("all built", banner())
