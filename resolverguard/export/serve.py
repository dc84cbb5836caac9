"""Serving the export zone: SOA, AXFR and IXFR (RFC 5936, RFC 1995) to clients the ACL admits, with TSIG.

A transfer client must pass the address ACL (``[export] clients``) and, when ``[export] tsig`` is set,
sign its request with that key: unsigned → REFUSED, a bad signature or unknown key → NOTAUTH; both
counted (resolverguard_export_refused_total{reason}) and logged at most once per client per minute.
Replies to signed requests are signed (multi-message transfers per RFC 8945 §5.3.1). Admission is
decided on the event loop; only an admitted AXFR or IXFR is built off it (Server._transfer).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig

from .. import wire
from ..codes import Outcome
from ..config import Config
from ..errors import ConfigError
from ..metrics import ExportMetrics
from ..pipeline import Access
from ..policy import Policy
from .journal import Journal
from .notify import Notifier
from .publish import Publisher
from .render import finish, ixfr_records, ixfr_serial, rcode_reply, refused_question, soa_reply, transfer_messages
from .tsig import TsigKey, configured_key

log = logging.getLogger(__name__)
TRANSFER_QTYPES = frozenset({6, 251, 252})  # SOA, IXFR, AXFR
NOTAUTH = 9
LOG_EVERY = 60.0  # seconds between two "transfer refused" log lines for one client
MAX_LOGGED_CLIENTS = 4096


class ZoneExport:
    """Serves the policy in force under ``origin`` to allowed (and, with a key, signed) clients.

    ``run()`` rebuilds the zone off the event loop whenever the policy changes and publishes it to the
    journal (publish.Publisher); SOA, IXFR and AXFR are answered for the journal's current serial, so all
    workers agree. Before the first publication a transfer gets SERVFAIL.
    """

    def __init__(
        self,
        origin: str,
        clients: Sequence[str],
        current: Callable[[], Policy],
        *,
        journal: Journal,
        tsig: TsigKey | None = None,
        notifier: object | None = None,
        metrics: ExportMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin.rstrip(".").lower()
        self.origin_name = dns.name.from_text(self.origin + ".")
        self.clients = Access(clients)
        self.journal = journal
        self.tsig = tsig
        self.metrics = metrics
        self.clock = clock
        self.publisher = Publisher(self.origin_name, current, journal, notifier)
        self.logged: dict[str, float] = {}  # client → when its last refusal was logged
        self.temporary = False  # the state dir is ours to remove at close()

    # ---- answering

    def is_transfer(self, query: wire.Query) -> bool:
        """An AXFR or IXFR of the export zone over TCP that this client may have: the server builds its reply
        off the event loop. A refused one is False: answer() refuses it on the loop, at once."""
        if query.qtype not in (251, 252) or not query.tcp or query.qname != self.origin:
            return False
        return self.clients.allowed(query.client) and isinstance(self._admit(query), dns.message.Message)

    def answer(self, query: wire.Query) -> list[bytes] | None:
        """Replies for a transfer or SOA query of the export origin; None for every other query."""
        if query.qtype not in TRANSFER_QTYPES or query.qname != self.origin:  # qtype first: qname is decoded lazily
            return None
        if query.qtype != 6 and not query.tcp:
            return None  # a transfer over UDP: the pipeline refuses it
        if not self.clients.allowed(query.client):
            self._refuse(query.client, "acl")
            return [wire.reply_for(query, wire.REFUSED)]
        message = self._admit(query)
        if isinstance(message, tuple):
            reason, reply = message
            if reason is not None:
                self._refuse(query.client, reason)
            return [reply]
        if refused_question(message, self.origin_name):
            return [rcode_reply(message, dns.rcode.REFUSED)]
        serial = self.journal.serial
        if serial is None:  # nothing published yet
            return [rcode_reply(message, dns.rcode.SERVFAIL)]
        rdtype = message.question[0].rdtype
        if rdtype == dns.rdatatype.SOA:
            return [soa_reply(message, self.publisher.soa(serial), self.origin_name)]
        started = time.perf_counter()
        kind, since, messages = self._transfer(message, serial)
        log.info(
            "transfer kind=%s client=%s client_serial=%s serial=%d messages=%d seconds=%.4f",
            kind,
            query.client,
            since,
            serial,
            len(messages),
            time.perf_counter() - started,
        )
        return messages

    def _admit(self, query: wire.Query) -> dns.message.Message | tuple[str | None, bytes]:
        """The query as a message, its TSIG verified; or (refusal reason or None, the reply) if it fails."""
        keyring = self.tsig.keyring if self.tsig else None
        try:
            message = dns.message.from_wire(query.data, keyring=keyring)
        except (dns.message.UnknownTSIGKey, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return "bad_key", wire.reply_for(query, NOTAUTH)
        except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.PeerError):
            return "bad_signature", wire.reply_for(query, NOTAUTH)
        except dns.exception.DNSException:
            return None, wire.error_reply(query.data, wire.FORMERR)
        if self.tsig is not None and not message.had_tsig:
            return "no_key", wire.reply_for(query, wire.REFUSED)
        return message

    def _transfer(self, message: dns.message.Message, serial: int) -> tuple[str, int | None, list[bytes]]:
        since = ixfr_serial(message) if message.question[0].rdtype == dns.rdatatype.IXFR else None
        if since is not None:
            if since == serial or _newer(since, serial):  # RFC 1995 §2: up to date (or ahead): the current SOA
                kind = "ixfr-uptodate" if since == serial else "ixfr-newer"
                return kind, since, transfer_messages(message, [self.publisher.soa(serial)])
            deltas = self.journal.deltas(since)
            if deltas is not None:
                records = ixfr_records(self.publisher.soa, deltas, serial)
                return "ixfr", since, transfer_messages(message, records)
        bodies = self.publisher.full_zone(serial)
        if bodies is None:
            return Outcome.SERVFAIL, since, [rcode_reply(message, dns.rcode.SERVFAIL)]
        return "axfr", since, finish(message, bodies)

    def _refuse(self, client: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused.labels(reason).inc()
        now = self.clock()
        last = self.logged.get(client)
        if last is not None and now - last < LOG_EVERY:
            return
        if len(self.logged) >= MAX_LOGGED_CLIENTS:  # bounded: forget the clients not seen for a minute
            self.logged = {c: t for c, t in self.logged.items() if now - t < LOG_EVERY}
            if len(self.logged) >= MAX_LOGGED_CLIENTS:
                return
        self.logged[client] = now
        log.warning(
            "transfer refused client=%s reason=%s zone=%s (logged once a minute per client)",
            client,
            reason,
            self.origin,
        )

    # ---- running

    async def run(self) -> None:
        """Rebuild and publish the zone whenever the policy changes (publish.Publisher.run)."""
        await self.publisher.run()

    def close(self) -> None:
        self.publisher.stop()
        if self.temporary:
            shutil.rmtree(self.journal.dir, ignore_errors=True)


def _newer(a: int, b: int) -> bool:
    """Serial ``a`` is newer than ``b`` in serial number arithmetic (RFC 1982 §3.2)."""
    return a != b and (a - b) % 2**32 < 2**31


def setup_export(cfg: Config, current: Callable[[], Policy], registry: object) -> ZoneExport | None:
    """The ZoneExport the config asks for (None if ``[export] clients`` is empty); its state dir must exist.

    ``registry``: the guard's Metrics (the export counts on its tally), or a bare CollectorRegistry.
    """
    if not cfg.export_clients:
        return None
    tsig = configured_key(cfg.export_tsig)
    state_dir = cfg.export_dir() or tempfile.mkdtemp(prefix="resolverguard-export-")
    try:
        journal = Journal(state_dir, keep=cfg.export_journal_versions)
    except OSError as exc:
        raise ConfigError(f"export state_dir {state_dir}: {exc.strerror or exc}") from None
    metrics = ExportMetrics(registry, [str(s) for s in cfg.export_notify])
    origin = dns.name.from_text(cfg.export_origin)
    export = ZoneExport(cfg.export_origin, cfg.export_clients, current, journal=journal, tsig=tsig, metrics=metrics)

    def acked(secondary: str, serial: int) -> None:
        metrics.acked.labels(secondary).set(serial)
        journal.acknowledged(secondary, serial)

    if cfg.export_notify:
        soa_text = export.publisher.soa
        export.publisher.notifier = Notifier(origin, cfg.export_notify, lambda serial: soa_text(serial).rdata, acked)
    log.info(
        "export zone=%s clients=%s tsig=%s notify=%s state_dir=%s journal_versions=%d",
        origin,
        ",".join(cfg.export_clients),
        tsig.name if tsig else "none",
        ",".join(str(s) for s in cfg.export_notify) or "none",
        state_dir,
        cfg.export_journal_versions,
    )
    export.temporary = not cfg.export_dir()
    return export
