"""Hub datasets: whether the Hugging Face hub is reachable, and loading a dataset from it.

An unreachable hub switches `datasets` to offline mode, so cached hub datasets load at once; one
that is neither reachable nor cached is refused with a hint to point the plan at local files.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request

import datasets
import huggingface_hub.constants

from lmplay.data.source_spec import SourceSpec
from lmplay.errors import HubUnavailableError, UsageError, first_line

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 2.0
_TRUE = {"1", "ON", "YES", "TRUE"}


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub can be reached; when not, switch `datasets` to offline mode.

    Offline mode makes `datasets` answer from its local cache at once instead of retrying the
    network for tens of seconds. The answer is kept for the life of the process.
    """
    reachable = not _offline_by_env() and _tcp_probe(*_probe_address(), _PROBE_TIMEOUT_S)
    if not reachable:
        _enter_offline_mode()
    return reachable


def _offline_by_env() -> bool:
    flags = (os.environ.get(var, "").upper() for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in _TRUE for flag in flags) or bool(datasets.config.HF_HUB_OFFLINE)


def _probe_address() -> tuple[str, int]:
    endpoint = urllib.parse.urlsplit(datasets.config.HF_ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "", parsed.port or 80
    default_port = 443 if endpoint.scheme == "https" else 80
    return endpoint.hostname or "", endpoint.port or default_port


def _tcp_probe(host: str, port: int, timeout: float) -> bool:
    # A thread bounds the whole attempt: the socket timeout does not cover a stalled DNS lookup.
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=attempt, name="lmplay-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def _enter_offline_mode() -> None:
    if not _offline_by_env():
        logger.warning("the Hugging Face hub is not reachable; using cached hub datasets only")
    # Both libraries read these flags at import time; the environment covers worker processes.
    os.environ["HF_HUB_OFFLINE"] = "1"
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_hub(spec: SourceSpec) -> datasets.Dataset:
    online = hub_reachable()
    try:
        return datasets.load_dataset(spec.hub, spec.config, split=spec.split)
    except Exception as exc:
        if _is_local_disk_error(exc):
            raise
        where = f"dataset {spec.name!r} (hub {spec.hub}" + (
            f", config {spec.config})" if spec.config else ")"
        )
        hint = (
            f'point the plan at local files instead, e.g. "files": ["data/{spec.name}.parquet"], '
            "or run once with hub access and --save-datasets"
        )
        if not online:
            if isinstance(exc, (OSError, ValueError)) or _is_network_error(exc):
                raise HubUnavailableError(
                    f"{where} is not reachable and not cached; {hint}"
                ) from exc
            raise
        if isinstance(exc, OSError) or _is_network_error(exc):
            raise HubUnavailableError(
                f"{where} could not be loaded ({first_line(exc)}); {hint}"
            ) from exc
        if isinstance(exc, ValueError):  # unknown config or split: datasets names the valid ones
            raise UsageError(f"{where}: {first_line(exc)}") from exc
        raise


def _is_local_disk_error(exc: Exception) -> bool:
    return isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _is_network_error(exc: Exception) -> bool:
    # The hub client's HTTP library has changed across versions; match on where the error lives.
    return type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3"}
