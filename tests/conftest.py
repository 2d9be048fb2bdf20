"""Shared pytest fixtures. Kept minimal: helpers live in their own modules under tests/."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.support.openai_server import OpenAIServer, start_server


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    """A real OpenAI-compatible server (`transformers serve`) on 127.0.0.1, one per test session.

    Yields `tests/support/openai_server.py:OpenAIServer` with:
      - `base_url`: root URL without `/v1` (e.g. `http://127.0.0.1:41234`); `/health` is there,
        the API under `base_url + "/v1"` (also `api_base`);
      - `model`: the name to send and that `/v1/models` lists (`tiny/chat`);
      - `api_key`: None (the server checks no key);
      - `port`, `log_path`, `process`, `is_running()`, `log_tail()`;
      - `stop()`: ends the server; idempotent. The fixture stops it at session end. A test that
        needs to kill a server must start its own with `start_server(tmp_path)`, not stop this one.
    Streams end without `[DONE]` and carry `usage` in the final chunk (see openai_server.py).
    """
    server = start_server(tmp_path_factory.mktemp("openai-server"))
    try:
        yield server
    finally:
        server.stop()


# Fixtures that start real processes: a test that uses one is slow, whether or not it says so.
SLOW_FIXTURES = frozenset({"openai_server", "cli_run", "analyzer", "real_gateway"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
