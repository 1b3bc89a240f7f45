"""The manual in docs/ and the programs' options cannot drift apart.

Each program's page has a table whose rows start with its options
(`| `-p`, `--port` | default | meaning |`): every option of its ``Options``
is there, nothing there is gone, short forms agree, and where ``--help``
prints a default it is the one the docs give.
"""

from __future__ import annotations

import os
import re

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT
from udpupper.bench.cli import Options as BenchOptions
from udpupper.client.options import Options as ClientOptions
from udpupper.server.tap import Options as ServerOptions

ROW = re.compile(r"^\| ((?:`-{1,2}[\w-]+`(?:, )?)+) \| ([^|]*) \|", re.M)
PAGES = (("server.md", ServerOptions), ("client.md", ClientOptions), ("bench.md", BenchOptions))


def documented(page: str) -> dict[str, tuple[str | None, str]]:
    """--long -> (short, default) from the page's option tables."""
    with open(os.path.join(ROOT, "docs", page)) as source:
        text = source.read()
    found = {}
    for names, default in ROW.findall(text):
        flags = re.findall(r"`(-{1,2}[\w-]+)`", names)
        long_ = next(flag for flag in flags if flag.startswith("--"))
        short = next((flag for flag in flags if not flag.startswith("--")), None)
        found[long_] = (short, default.strip())
    return found


def declared(options: type) -> dict[str, tuple[str | None, object]]:
    """--long -> (short, default) from a usage.Options class."""
    found = {}
    for name, short, default, *_ in getattr(options, "optParameters", []):
        found[f"--{name}"] = (f"-{short}" if short else None, default)
    for name, short, *_ in getattr(options, "optFlags", []):
        found[f"--{name}"] = (f"-{short}" if short else None, None)
    return found


@tiers.unit
class OptionDocsTests(unittest.TestCase):
    def test_every_option_documented_and_nothing_more(self) -> None:
        for page, options in PAGES:
            docs, code = documented(page), declared(options)
            self.assertEqual(sorted(set(code) - set(docs)), [], f"missing from docs/{page}")
            self.assertEqual(sorted(set(docs) - set(code)), [], f"gone, but in docs/{page}")
            for name, (short, _) in code.items():
                self.assertEqual(docs[name][0], short, f"{page}: {name}'s short form")

    def test_help_shows_the_defaults_the_docs_give(self) -> None:
        for page, options in PAGES:
            docs = documented(page)
            for name, (_, default) in declared(options).items():
                if default is None or isinstance(default, bool):
                    continue
                shown = str(default)
                self.assertIn(shown, options().__str__(), f"{name} in --help")
                given = docs[name][1].strip("`")
                self.assertIn(shown, (given, given.replace(",", "")), f"{page}: {name}")


@tiers.unit
class PagesTests(unittest.TestCase):
    def markdown(self) -> list[str]:
        pages = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "NEWS.md")]
        folder = os.path.join(ROOT, "docs")
        pages += [
            os.path.join(folder, name)
            for name in sorted(os.listdir(folder))
            if name.endswith(".md")
        ]
        return pages

    def test_the_readme_is_a_front_page(self) -> None:
        with open(os.path.join(ROOT, "README.md")) as readme:
            self.assertLessEqual(sum(1 for _ in readme), 250)

    def test_every_link_leads_somewhere_in_the_repository(self) -> None:
        for page in self.markdown():
            with open(page) as source:
                text = source.read()
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
                path = os.path.normpath(os.path.join(os.path.dirname(page), target))
                self.assertTrue(os.path.exists(path), f"{page}: {target}")
                self.assertTrue(path.startswith(ROOT + os.sep), f"{page}: {target}")
            self.assertNotIn("../shared", text, page)
