"""Exchanges with upstream resolvers: a pure state machine per query (resolution), the I/O that carries out its
actions (driver), and the upstreams' health and the rotating socket pool (pool)."""

from .driver import UpstreamPool
from .pool import Upstream, from_resolv_conf
from .resolution import Arm, Done, Resend, Resolution, Send, Settings

__all__ = ["Arm", "Done", "Resend", "Resolution", "Send", "Settings", "Upstream", "UpstreamPool", "from_resolv_conf"]
