"""Serve the app on a free loopback port for a test, and close it afterwards."""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(**launch_kwargs: Any) -> Iterator[str]:
    """A freshly built demo, launched as app.py launches it; yields its URL."""
    from app.ui import LAUNCH, build_demo

    demo = build_demo()
    port = _free_port()
    options = LAUNCH | launch_kwargs
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **options)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def final(stream: Iterator[Any]) -> Any:
    """The last value a streaming endpoint yields: what a client's `predict` returns."""
    (last,) = deque(stream, maxlen=1)
    return last
