"""Shared fixtures. Each concern keeps its fixtures in its own module, loaded here."""

pytest_plugins = [
    "tests.support.fixtures_pg",
    "tests.support.fixtures_s3",
    "tests.support.fixtures_proxy",
    "tests.support.early_build",
    "tests.support.tampered_store",
]
