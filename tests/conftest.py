"""pytest: say at the top whether the C helpers are built for this Python."""

from tests.helpers import banner


def pytest_report_header(config) -> str:
    return banner()
