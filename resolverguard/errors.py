"""The one exception tree of resolverguard; each class docstring is its message."""

import errno

import dns.edns
import dns.rcode


class ResolverGuardError(Exception):
    """resolverguard error"""

    rcode_hint = dns.rcode.SERVFAIL

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (self.__doc__,)))


class ConfigError(ResolverGuardError):
    """invalid configuration"""


class ZoneFileError(ConfigError):
    """invalid zone or list file"""

    def __init__(self, path: object, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


class MalformedQuery(ResolverGuardError):
    """malformed query"""

    rcode_hint = dns.rcode.FORMERR


class UpstreamError(ResolverGuardError):
    """upstream failed"""

    ede = dns.edns.EDECode.NETWORK_ERROR  # RFC 8914: the SERVFAIL this becomes says why


class UpstreamTimeout(UpstreamError):
    """upstream timed out"""

    ede = dns.edns.EDECode.NO_REACHABLE_AUTHORITY


class BadUpstreamReply(UpstreamError):
    """upstream sent an unusable reply"""


class UpstreamRefused(UpstreamError):
    """upstream refused the query (REFUSED, or ICMP port unreachable)"""


class ForwardingLoop(UpstreamError):
    """forwarding loop: a query the guard sent upstream came back to the guard"""

    ede = dns.edns.EDECode.OTHER  # RFC 8914 has no code for a loop; the text says it


def os_reason(exc: OSError, server: str = "DNS server") -> str:
    """An OSError as the operator needs it: the cause, and what usually fixes it (`server`: what else may listen)."""
    hints = {
        errno.EADDRINUSE: f"port in use (another {server}, or another resolverguard, listens there)",
        errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE or root)",
        errno.EADDRNOTAVAIL: "not an address of this host",
    }
    return hints.get(exc.errno) or exc.strerror or str(exc)
