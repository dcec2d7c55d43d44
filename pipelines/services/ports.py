"""Free ports on this machine for the servers percept starts: the native stack's, a local Ray's dashboard."""

from __future__ import annotations

import random
import socket

# Ports for servers started here are drawn below the kernel's ephemeral range (bind(0) and every
# outgoing connection take theirs from it; Ray's raylets and gRPC servers too) and above Ray's
# worker ports (10002-19999). A port picked with bind(0), released and bound again seconds later
# by a server lost that race to a Ray cluster starting beside it (CI, 2026-12-06: prefect-server
# met a gRPC server on its port).
SERVER_PORTS = range(20000, 32768)


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that are free now and that no process is handed by the kernel."""
    rng, held = random.SystemRandom(), []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", rng.choice(SERVER_PORTS)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]
