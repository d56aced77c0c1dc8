"""The listening sockets of `poczta serve`: every served address of the config bound once
before the start (a copy per worker process, sharing the port), each worker keeping its
own copy and closing the others'."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping, Sequence

from poczta.config import Config, ListenAddress
from poczta.net.listener import bind_socket
from poczta.process import StartError

__all__ = ["SERVED", "Address", "Sockets", "bind_listeners", "close_sockets", "take_slot"]

SERVED = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")

Address = tuple[str, ListenAddress]  # (service, address) of one listener
Sockets = Mapping[Address, socket.socket]  # what one process listens on


def bind_listeners(config: Config, copies: int = 1) -> dict[Address, list[socket.socket]]:
    """Bind every served address of the config, `copies` times (one per worker process,
    sharing the port); StartError naming the config key when one cannot be bound."""
    bound: dict[Address, list[socket.socket]] = {}
    try:
        for service, addresses in config.listeners.items():
            if service not in SERVED:
                continue
            for address in addresses:
                bound[service, address] = sockets = []
                for _ in range(copies):
                    sockets.append(_bind(service, address, reuse_port=copies > 1))
    except BaseException:
        close_sockets(bound)
        raise
    return bound


def _bind(service: str, address: ListenAddress, *, reuse_port: bool) -> socket.socket:
    try:
        return bind_socket(address.host, address.port, reuse_port=reuse_port)
    except socket.gaierror as exc:
        reason = f"cannot resolve {address.host!r} ({exc.strerror or exc})"
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EACCES and address.port < 1024:
            reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    raise StartError(f"listeners.{service}: {address}: {reason}")


def close_sockets(bound: Mapping[Address, Iterable[socket.socket]]) -> None:
    for sockets in bound.values():
        for sock in sockets:
            sock.close()


def take_slot(bound: Mapping[Address, Sequence[socket.socket]], slot: int) -> Sockets:
    """In a worker: its own copy of each socket; the other workers' copies are closed here."""
    mine = {address: sockets[slot] for address, sockets in bound.items()}
    for sockets in bound.values():
        for index, sock in enumerate(sockets):
            if index != slot:
                sock.close()
    return mine
