"""Shared fixtures. Each concern keeps its fixtures in its own module, loaded here."""

pytest_plugins = [
    "tests.fixtures_pg",
    "tests.fixtures_s3",
    "tests.fixtures_proxy",
]
