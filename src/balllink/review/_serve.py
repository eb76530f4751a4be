"""Running the review app with uvicorn: loopback by default, TLS when given a certificate."""

from __future__ import annotations

import ipaddress
import logging
import socket

from ._app import ReviewApp
from ._routes import build

__all__ = ["is_loopback", "serve"]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost).

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback
                       for a in socket.getaddrinfo(host, None))  # fmt: skip
        except (OSError, ValueError):
            return False


def serve(
    path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    certfile: str | None = None,
    keyfile: str | None = None,
    readonly: bool = False,
    warn=None,
) -> None:
    """Serve the review app of the lead database at ``path`` until interrupted.

    Parameters
    ----------
    path : str or Path
        The lead database folder.
    host, port : str, int
        Where to listen (default only this machine: ``127.0.0.1:8000``). Any other host
        makes the app reachable from the network: ``warn`` is called with a warning (and
        it is logged); serve it over TLS then (``certfile``, ``keyfile``).
    certfile, keyfile : str, optional
        PEM certificate and key: HTTPS, and the session cookie is sent over HTTPS only.
    readonly : bool
        Review only: no change can be made through the app.
    warn : callable, optional
        ``warn(text)`` for the network warning (the CLI prints it).
    """
    import uvicorn

    if (certfile is None) != (keyfile is None):
        raise ValueError("give both --certfile and --keyfile for HTTPS, or neither")
    app = ReviewApp(path, secure_cookies=certfile is not None, readonly=readonly)
    if not is_loopback(host):
        text = (
            f"serving on {host}:{port}: reachable from other machines"
            + ("" if certfile else " over plain HTTP (passwords and sessions unencrypted; "
               "give --certfile/--keyfile)")
        )  # fmt: skip
        log.warning(text)
        if warn is not None:
            warn(text)
    uvicorn.run(
        build(app),
        host=host,
        port=int(port),
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="warning",
        server_header=False,
    )
