"""What every zoo test shares: downloads that can reach 127.0.0.1 only, and fast retries."""

from __future__ import annotations

import pytest

from segnet.zoo import download
from segnet.zoo.download import RetryPolicy

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02, connect_timeout=5, read_timeout=5)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    """No mirror or models dir from the environment, lock files under tmp_path, and no connection to
    anything but 127.0.0.1 (a registry URL reached by mistake fails at once as 'connection refused')."""
    import urllib3.util.connection

    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.delenv("SEGNET_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = urllib3.util.connection.create_connection

    def loopback_only(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost"):
            raise ConnectionRefusedError(111, "Connection refused")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", loopback_only)
    monkeypatch.setattr(download, "DEFAULT_RETRY", FAST)  # for the command, which uses the default
