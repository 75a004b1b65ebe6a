"""Refuse to start when a port is taken, naming the service and the flag that moves it."""

from __future__ import annotations

import socket

from stack.plan import LOOPBACK, Ports


class PortInUseError(Exception):
    pass


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option the servers use, so a port in TIME_WAIT from our own last run counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def check_ports(ports: Ports) -> None:
    """Raise PortInUseError listing every taken or duplicated port, with the flag to change each."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for role, (port, flag) in ports.by_role().items():
        if port in seen:
            problems.append(f"port {port} is given to both the {seen[port]} and the {role}: change {flag}")
            continue
        seen[port] = role
        if not port_is_free(port):
            problems.append(
                f"port {port} ({role}) is already in use on {LOOPBACK}: stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or pass {flag} N"
            )
    if problems:
        raise PortInUseError("cannot start the local stack:\n  " + "\n  ".join(problems))
