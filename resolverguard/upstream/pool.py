"""What the resolutions draw on: the upstreams and their health (RTT estimator, backoff), and the rotating pool of
UDP sockets on random source ports."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

INITIAL_RTO = 0.376  # an upstream we have not timed yet (Unbound's infra cache starts there too)
MIN_RTO = 0.2  # a forwarder's upstream resolves on a miss: never retransmit faster than this
IP_RECVERR, IPV6_RECVERR = 11, 25  # Linux: ICMP errors reach an unconnected UDP socket (not in `socket`)
# Upstream UDP sockets per address family (Unbound's outgoing-range, small): while the pool is busy a query
# shares one of PORTS open sockets; each is retired after PORT_USES queries or PORT_AGE seconds and replaced by
# a fresh one on another OS-chosen random port; when the loop goes idle with nothing in flight they all close,
# so a quiet guard still sends each query from a port of its own.
PORTS, PORT_USES, PORT_AGE = 16, 100, 5.0


@dataclass(eq=False)
class Upstream:
    """One upstream resolver and what we have learnt of it: health and round-trip time (RFC 6298 estimator).

    Health changes only on evidence about the upstream, not about one query: a try that fails after the
    upstream answered something else sent later than it (a query it drops, a class it does not serve) leaves
    it up, so no client can move everyone's traffic with odd queries.
    """

    host: str
    port: int = 53
    failures: int = 0
    down_until: float = 0.0
    srtt: float | None = None
    rttvar: float = 0.0
    up: bool | None = None  # None: no exchange yet
    answered_at: float = float("-inf")  # when it last answered anything (the clock of the resolutions)
    name: str = field(init=False)
    peer: tuple[str, int] = field(init=False)  # (host, port): what a reply's source must be
    family: int = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.peer = (self.host, self.port)
        self.family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def rto(self, cap: float) -> float:
        """How long to wait for this upstream before retransmitting or failing over."""
        if self.srtt is None:
            return min(cap, INITIAL_RTO)
        return max(MIN_RTO, min(cap, self.srtt + 4 * self.rttvar))

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def answered(self, now: float) -> None:
        """It answered (any rcode): it is up."""
        self.answered_at = now
        if self.up is not True:
            self.failures, self.down_until = 0, 0.0
            if self.up is False:
                log.warning("upstream up again upstream=%s", self.name)
            self.up = True

    def failed(self, kind: str, sent: float, now: float) -> bool:
        """A try sent at `sent` failed; False (health unchanged) when the upstream answered since then."""
        if self.answered_at >= sent:
            log.debug("upstream failed one query upstream=%s kind=%s (it answers others)", self.name, kind)
            return False
        self.failures += 1
        self.down_until = now + min(30.0, 0.5 * 2 ** min(self.failures, 6))
        if self.up is not False:
            log.warning("upstream down upstream=%s kind=%s", self.name, kind)
        self.up = False
        log.debug("upstream failed upstream=%s kind=%s failures=%d", self.name, kind, self.failures)
        return True


def ranked(upstreams: list[Upstream], now: float) -> list[Upstream]:
    """Healthy upstreams in configured order, then the ones marked down, least recently failed first."""
    for u in upstreams:
        if u.down_until > now:
            return sorted(upstreams, key=lambda u: (u.down_until > now, u.down_until))
    return upstreams


def from_resolv_conf(path: str = "/etc/resolv.conf") -> list[Upstream]:
    """The nameservers of resolv.conf, the default upstreams."""
    found = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    found.append(Upstream(parts[1].split("%")[0]))
    except OSError:
        pass
    return found


class Port:
    """A UDP socket on an OS-chosen random port, shared by the exchanges in flight on it (told apart by ID):
    ``exchanges`` maps each ID to whatever the driver keeps for it."""

    __slots__ = ("sock", "fd", "exchanges", "uses", "born", "ports")

    def __init__(self, ports: Ports, now: float) -> None:
        sock = socket.socket(ports.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            v6 = ports.family == socket.AF_INET6
            sock.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, IPV6_RECVERR if v6 else IP_RECVERR, 1)
            sock.bind(("::", 0) if v6 else ("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        self.sock, self.fd, self.ports = sock, sock.fileno(), ports
        self.exchanges: dict[bytes, object] = {}
        self.uses, self.born = 0, now
        ports.loop.add_reader(self.fd, ports.readable, self)

    def close(self) -> None:
        if self.fd >= 0:
            self.ports.loop.remove_reader(self.fd)
            self.sock.close()
            self.fd = -1


class Ports:
    """The upstream UDP sockets of one address family; see PORTS. readable(port) is called when one has data."""

    def __init__(self, family: int, loop: asyncio.AbstractEventLoop, readable: Callable[[Port], None]) -> None:
        self.family, self.loop, self.readable = family, loop, readable
        self.live: list[Port] = []  # sockets taking new queries
        self.inflight = 0
        self.checking = False

    def take(self, now: float, draw: Callable[[int], int]) -> Port:
        """The socket for one more exchange: a fresh one until PORTS are open, then a random open one."""
        live = self.live
        if len(live) < PORTS:
            port = Port(self, now)
            live.append(port)
        else:
            port = live[draw(len(live))]
        port.uses += 1
        if port.uses >= PORT_USES or now - port.born >= PORT_AGE:
            live.remove(port)  # retired: this exchange is its last; closed when it is over
        self.inflight += 1
        return port

    def release(self, port: Port) -> None:
        """An exchange on port is over (its entry already gone from port.exchanges)."""
        self.inflight -= 1
        if not port.exchanges and port not in self.live:
            port.close()
        if not self.inflight and not self.checking:
            self.checking = True
            self.loop.call_soon(self._idle, 2)

    def _idle(self, hops: int) -> None:
        """Nothing in flight for `hops` turns of the loop, its I/O included: the guard is quiet, close every socket."""
        if self.inflight:
            self.checking = False
        elif hops > 1:
            self.loop.call_soon(self._idle, hops - 1)
        else:
            self.checking = False
            for port in self.live:
                port.close()
            self.live.clear()
