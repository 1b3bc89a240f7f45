"""contrib/prometheus: the rules load (``promtool check rules``), every
alert fires where it should and stays quiet where it should not
(``promtool test rules``), and no alert goes without both cases."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.processes import ROOT

FOLDER = os.path.join(ROOT, "contrib", "prometheus")
RULES, TESTS = "udpupper-rules.yml", "udpupper-rules.test.yml"


def read(name: str) -> str:
    with open(os.path.join(FOLDER, name)) as text:
        return text.read()


@tiers.unit
class EveryAlertTestedTests(unittest.TestCase):
    def test_each_alert_has_a_firing_case_and_a_quiet_one(self) -> None:
        alerts = re.findall(r"(?m)^\s*- alert: (\w+)$", read(RULES))
        self.assertGreaterEqual(len(alerts), 9)
        cases = re.findall(
            r"(?ms)^\s*- eval_time: \S+\n\s*alertname: (\w+)\n\s*exp_alerts:( \[\])?", read(TESTS)
        )
        for alert in alerts:
            firing = [quiet for name, quiet in cases if name == alert and not quiet]
            quiet = [quiet for name, quiet in cases if name == alert and quiet]
            self.assertTrue(firing and quiet, f"{alert}: {len(firing)} firing, {len(quiet)} quiet")

    def test_each_alert_says_what_to_do(self) -> None:
        rules = read(RULES)
        for alert, body in re.findall(r"(?ms)^\s*- alert: (\w+)\n(.*?)(?=^\s*- alert: |\Z)", rules):
            self.assertIn("summary:", body, alert)
            self.assertIn("description:", body, alert)


@tiers.system
class PromtoolTests(unittest.TestCase):
    skip = (
        None
        if shutil.which("promtool")
        else "promtool is not installed (apt-get install prometheus)"
    )

    def promtool(self, *arguments: str) -> None:
        result = subprocess.run(
            ["promtool", *arguments], cwd=FOLDER, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_the_rules_load(self) -> None:
        self.promtool("check", "rules", RULES)

    def test_the_rules_unit_tests_pass(self) -> None:
        self.promtool("test", "rules", TESTS)
