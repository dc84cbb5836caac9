"""The exported policy zone for secondaries: SOA, AXFR and IXFR (RFC 1995) with TSIG (RFC 8945), NOTIFY.

A transfer client must pass the address ACL (``[export] clients``) and, when ``[export] tsig`` is set,
sign its request with that key: unsigned → REFUSED, a bad signature or unknown key → NOTAUTH; both
counted (resolverguard_export_refused_total{reason}) and logged at most once per client per minute.
Replies to signed requests are signed (dnspython's dns.tsig; multi-message transfers per RFC 8945 §5.3.1).

The zone is rebuilt off the event loop whenever the policy changes and published to the Journal, which
fixes the serial for every worker and keeps the deltas IXFR answers from; a process that publishes a
new serial sends NOTIFY to the configured secondaries (notify.Notifier).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from . import wire
from .config import Config
from .errors import ConfigError, ResolverGuardError
from .export import Export, Record, build_policy
from .journal import DEFAULT_KEEP, Journal
from .pipeline import Access
from .policy import Policy

log = logging.getLogger(__name__)
TRANSFER_QTYPES = frozenset({6, 251, 252})  # SOA, IXFR, AXFR
NOTAUTH = 9
AXFR_MAX_MESSAGE = 65535
TSIG_RESERVE = 512  # room left in each transfer message for its TSIG record
LOG_EVERY = 60.0  # seconds between two "transfer refused" log lines for one client
MAX_LOGGED_CLIENTS = 4096
REFUSE_REASONS = ("acl", "no_key", "bad_key", "bad_signature")
POLL_SECONDS = 0.25  # how often the export looks for a new policy to publish


@dataclass(frozen=True)
class TsigKey:
    name: dns.name.Name
    algorithm: dns.name.Name
    key: dns.tsig.Key

    @property
    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return {self.name: self.key}


def load_tsig(name: str, algorithm: str, secret_file: str) -> TsigKey:
    """The key from ``secret_file`` (base64, one line); the file must not be group or world readable."""
    try:
        info = os.stat(secret_file)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{secret_file}: TSIG secret file is readable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it"
            )
        with open(secret_file, encoding="ascii") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{secret_file}: cannot read TSIG secret: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{secret_file}: TSIG secret is not base64 text") from None
    try:
        key_name = dns.name.from_text(name)
        algo = dns.name.from_text(algorithm)
        keyring = dns.tsigkeyring.from_text({name: (algorithm, secret)})
        dns.tsig.get_context(keyring[key_name])  # rejects an unknown algorithm now, not at the first transfer
    except (dns.exception.DNSException, ValueError, TypeError, NotImplementedError) as exc:
        raise ConfigError(f"{secret_file}: bad TSIG key {name!r} ({algorithm}): {exc}") from None
    return TsigKey(key_name, algo, keyring[key_name])


# ---------------------------------------------------------------- records → wire


class RRsetCache:
    """Record → RRset with the owner made absolute; CNAME targets parsed once (most rules share four)."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin
        self.rdata: dict[tuple[str, str], dns.rdata.Rdata] = {}

    def rrset(self, record: Record) -> dns.rrset.RRset:
        key = (record.rdtype, record.rdata)
        rdata = self.rdata.get(key)
        if rdata is None:
            rdtype = dns.rdatatype.from_text(record.rdtype)
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, record.rdata, self.origin)
            if rdtype == dns.rdatatype.CNAME:
                self.rdata[key] = rdata
        owner = self.origin if record.owner == "@" else dns.name.from_text(record.owner, self.origin)
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, rdata.rdtype)
        rrset.add(rdata, record.ttl)
        return rrset


def transfer_messages(query: dns.message.Message, rrsets: Iterable[dns.rrset.RRset]) -> list[bytes]:
    """The answer RRs in as few messages as fit 64 KiB each, TSIG-signed in sequence if the query was."""
    question = query.question[0]
    signed = query.had_tsig
    messages: list[bytes] = []
    ctx = None

    def renderer(first: bool) -> dns.renderer.Renderer:
        flags = dns.flags.QR | dns.flags.AA | (query.flags & dns.flags.RD)
        r = dns.renderer.Renderer(id=query.id, flags=flags, max_size=AXFR_MAX_MESSAGE)
        if first:
            r.add_question(question.name, question.rdtype, question.rdclass)
        if signed:
            r.reserve(TSIG_RESERVE)
        return r

    def finish(r: dns.renderer.Renderer) -> None:
        nonlocal ctx
        r.write_header()
        if signed:
            r.release_reserved()
            ctx = r.add_multi_tsig(
                ctx,
                query.keyname,
                query.keyring,
                300,
                query.id,
                0,
                b"",
                query.mac if ctx is None else b"",
                query.keyalgorithm,
            )
        messages.append(r.get_wire())

    current = renderer(True)
    for rrset in rrsets:
        try:
            current.add_rrset(dns.renderer.ANSWER, rrset)
        except dns.exception.TooBig:
            finish(current)
            current = renderer(False)
            current.add_rrset(dns.renderer.ANSWER, rrset)
    finish(current)
    return messages


def axfr_response(query: dns.message.Message, export: Export) -> list[bytes]:
    """Wire replies for a query of ``export``'s origin, from its records alone (no journal).

    AXFR and IXFR (the full zone, RFC 1995 §4) get SOA, every RR, SOA; a SOA query gets the SOA;
    anything else — another name, class or type, or a non-QUERY opcode — gets one REFUSED reply.
    """
    if _refused_question(query, export.origin):
        return [_rcode(query, dns.rcode.REFUSED)]
    cache = RRsetCache(export.origin)
    soa_record, ns_record = export.apex()
    soa = cache.rrset(soa_record)
    if query.question[0].rdtype == dns.rdatatype.SOA:
        return [_soa_reply(query, soa)]
    body = (cache.rrset(r) for r in export.records)
    return transfer_messages(query, _chain([soa, cache.rrset(ns_record)], body, [soa]))


def ixfr_rrsets(
    soa_of: Callable[[int], dns.rrset.RRset], cache: RRsetCache, deltas: Sequence, current: int
) -> Iterable[dns.rrset.RRset]:
    """RFC 1995 §4 incremental form: SOA(new), then per version SOA(old), removed…, SOA(next), added…, SOA(new)."""
    yield soa_of(current)
    for delta in deltas:
        yield soa_of(delta.old)
        yield from (cache.rrset(r) for r in delta.removed)
        yield soa_of(delta.new)
        yield from (cache.rrset(r) for r in delta.added)
    yield soa_of(current)


def _chain(*parts: Iterable[dns.rrset.RRset]) -> Iterable[dns.rrset.RRset]:
    for part in parts:
        yield from part


def _refused_question(query: dns.message.Message, origin: dns.name.Name) -> bool:
    question = query.question[0] if len(query.question) == 1 else None
    return (
        question is None
        or query.opcode() != dns.opcode.QUERY
        or question.name != origin
        or question.rdclass != dns.rdataclass.IN
        or question.rdtype not in (dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA)
    )


def _soa_reply(query: dns.message.Message, soa: dns.rrset.RRset) -> bytes:
    reply = dns.message.make_response(query)  # signed with the query's key if the query was signed
    reply.flags |= dns.flags.AA
    reply.answer.append(soa)
    return reply.to_wire()


def _rcode(query: dns.message.Message, rcode: int) -> bytes:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply.to_wire()


def _ixfr_serial(query: dns.message.Message) -> int | None:
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    return None


# ---------------------------------------------------------------- the running export


class ZoneExport:
    """Serves the policy in force under ``origin`` to allowed (and, with a key, signed) clients.

    ``run()`` rebuilds the zone off the event loop whenever the policy changes and publishes it to the
    journal; SOA, IXFR and AXFR are answered for the journal's current serial, so all workers agree.
    Before the first publication a transfer gets SERVFAIL.
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
        metrics: object | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin.rstrip(".").lower()
        self.origin_name = dns.name.from_text(self.origin + ".")
        self.clients = Access(clients)
        self.current = current
        self.journal = journal
        self.tsig = tsig
        self.notifier = notifier
        self.metrics = metrics
        self.clock = clock
        self.built: Export | None = None  # the last zone this process built
        self.rendered: Policy | None = None
        self.logged: dict[str, float] = {}  # client → when its last refusal was logged
        self.cache = RRsetCache(self.origin_name)
        self.temporary = False  # the state dir is ours to remove at close()

    # ---- answering

    def is_transfer(self, query: wire.Query) -> bool:
        """An AXFR or IXFR of the export zone over TCP: the server builds its reply off the event loop."""
        return query.qtype in (251, 252) and query.tcp and query.qname == self.origin

    def answer(self, query: wire.Query) -> list[bytes] | None:
        """Replies for a transfer or SOA query of the export origin; None for every other query."""
        if query.qtype not in TRANSFER_QTYPES or query.qname != self.origin:  # qtype first: qname is decoded lazily
            return None
        if query.qtype != 6 and not query.tcp:
            return None  # a transfer over UDP: the pipeline refuses it
        if not self.clients.allowed(query.client):
            self._refuse(query.client, "acl")
            return [wire.reply_for(query, wire.REFUSED)]
        keyring = self.tsig.keyring if self.tsig else None
        try:
            message = dns.message.from_wire(query.data, keyring=keyring)
        except (dns.message.UnknownTSIGKey, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            self._refuse(query.client, "bad_key")
            return [wire.reply_for(query, NOTAUTH)]
        except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.PeerError):
            self._refuse(query.client, "bad_signature")
            return [wire.reply_for(query, NOTAUTH)]
        except dns.exception.DNSException:
            return [wire.error_reply(query.data, wire.FORMERR)]
        if self.tsig is not None and not message.had_tsig:
            self._refuse(query.client, "no_key")
            return [wire.reply_for(query, wire.REFUSED)]
        if _refused_question(message, self.origin_name):
            return [_rcode(message, dns.rcode.REFUSED)]
        serial = self.journal.serial
        if serial is None:  # nothing published yet
            return [_rcode(message, dns.rcode.SERVFAIL)]
        rdtype = message.question[0].rdtype
        if rdtype == dns.rdatatype.SOA:
            return [_soa_reply(message, self._soa(serial))]
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

    def _transfer(self, message: dns.message.Message, serial: int) -> tuple[str, int | None, list[bytes]]:
        since = _ixfr_serial(message) if message.question[0].rdtype == dns.rdatatype.IXFR else None
        if since is not None:
            if since == serial:
                return "ixfr-uptodate", since, transfer_messages(message, [self._soa(serial)])
            deltas = self.journal.deltas(since)
            if deltas is not None:
                return "ixfr", since, transfer_messages(message, ixfr_rrsets(self._soa, self.cache, deltas, serial))
        snapshot = self.journal.snapshot()
        if snapshot is None:
            return "servfail", since, [_rcode(message, dns.rcode.SERVFAIL)]
        serial, records = snapshot
        soa = self._soa(serial)
        ns = self.cache.rrset(Record("@", self._ttl(), "NS", self._apex()[1].rdata))
        body = (self.cache.rrset(r) for r in records)
        return "axfr", since, transfer_messages(message, _chain([soa, ns], body, [soa]))

    def _apex(self) -> tuple[Record, Record]:
        return Export(self.origin_name, 0, self._ttl(), (), b"").apex()

    def _ttl(self) -> int:
        return self.built.ttl if self.built is not None else 300

    def _soa(self, serial: int) -> dns.rrset.RRset:
        soa = Export(self.origin_name, serial, self._ttl(), (), b"").apex()[0]
        return self.cache.rrset(soa)

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

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
        if self.temporary:
            shutil.rmtree(self.journal.dir, ignore_errors=True)

    # ---- publishing

    async def run(self) -> None:
        """Rebuild and publish the zone whenever the policy changes (checked every POLL_SECONDS)."""
        while True:
            policy = self.current()
            if policy is not self.rendered:
                await self.publish(policy)
            await asyncio.sleep(POLL_SECONDS)

    async def publish(self, policy: Policy) -> None:
        try:
            export = await asyncio.to_thread(build_policy, policy, origin=self.origin + ".", serial=0)
            serial, new = await asyncio.to_thread(self.journal.publish, export.digest, list(export.records))
        except ResolverGuardError as exc:  # e.g. a bad export origin: keep serving the previous version
            log.error("rpz export failed origin=%s error=%s", self.origin, exc)
            self.rendered = policy
            return
        except OSError as exc:
            log.error("rpz export journal failed dir=%s error=%s", self.journal.dir, exc)
            return
        self.built, self.rendered = export.with_serial(serial), policy
        if new:
            log.info("rpz export published origin=%s serial=%d", self.origin, serial)
            if self.notifier is not None:
                self.notifier.changed(serial)


def setup_export(cfg: Config, current: Callable[[], Policy], registry: object) -> ZoneExport | None:
    """The ZoneExport the config asks for (None if ``[export] clients`` is empty); its state dir must exist."""
    if not cfg.export_clients:
        return None
    from .notify import Notifier

    tsig = None
    if cfg.export_tsig:
        t = cfg.export_tsig
        tsig = load_tsig(t["name"], t.get("algorithm", "hmac-sha256"), t["secret_file"])
    state_dir = cfg.export_dir() or tempfile.mkdtemp(prefix="resolverguard-export-")
    try:
        journal = Journal(state_dir, keep=cfg.export_journal_versions)
    except OSError as exc:
        raise ConfigError(f"export state_dir {state_dir}: {exc.strerror or exc}") from None
    metrics = ExportMetrics(registry, [str(s) for s in cfg.export_notify])
    origin = dns.name.from_text(cfg.export_origin)

    def acked(secondary: str, serial: int) -> None:
        metrics.acked.labels(secondary).set(serial)
        journal.acknowledged(secondary, serial)

    notifier = (
        Notifier(origin, cfg.export_notify, lambda serial: Export(origin, serial, 300, (), b"").soa_rdata(), acked)
        if cfg.export_notify
        else None
    )
    log.info(
        "export zone=%s clients=%s tsig=%s notify=%s state_dir=%s journal_versions=%d",
        origin,
        ",".join(cfg.export_clients),
        tsig.name if tsig else "none",
        ",".join(str(s) for s in cfg.export_notify) or "none",
        state_dir,
        cfg.export_journal_versions,
    )
    export = ZoneExport(
        cfg.export_origin, cfg.export_clients, current, journal=journal, tsig=tsig, notifier=notifier, metrics=metrics
    )
    export.temporary = not cfg.export_dir()
    return export


def soa_serial(host: str, port: int, origin: str, tsig: TsigKey | None, timeout: float = 2.0) -> int | None:
    """The SOA serial ``host`` answers for ``origin`` (over UDP, signed if a key is given); None if it has none."""
    import dns.query

    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    if tsig is not None:
        query.use_tsig(tsig.keyring, tsig.name, algorithm=tsig.algorithm)
    reply = dns.query.udp(query, host, timeout=timeout, port=port)
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    return None


def check_secondary(cfg: Config, secondary: str) -> int:
    """export-rpz --check-secondary: 0 if the secondary has the guard's serial, 1 if not (or unreachable)."""
    from .config import parse_endpoint

    target = parse_endpoint(secondary, 53)
    tsig = None
    if cfg.export_tsig:
        t = cfg.export_tsig
        tsig = load_tsig(t["name"], t.get("algorithm", "hmac-sha256"), t["secret_file"])
    guard = cfg.listen[0]
    serials = {}
    for who, ep, key in (("guard", guard, tsig), ("secondary", target, tsig)):
        try:
            serials[who] = soa_serial(ep.host, ep.port, cfg.export_origin, key)
        except (dns.exception.DNSException, OSError) as exc:
            print(f"not in sync: {who} {ep} did not answer SOA {cfg.export_origin}: {type(exc).__name__} {exc}")
            return 1
    same = serials["guard"] is not None and serials["guard"] == serials["secondary"]
    print(
        f"{'in sync' if same else 'not in sync'}: zone {cfg.export_origin} guard {guard} serial "
        f"{serials['guard']}, secondary {target} serial {serials['secondary']}"
    )
    return 0 if same else 1


class ExportMetrics:
    """The export's metrics, declared against the server's registry."""

    def __init__(self, registry: object, secondaries: Iterable[str]) -> None:
        from prometheus_client import Counter, Gauge

        self.refused = Counter(
            "resolverguard_export_refused_total",
            "Transfers of the export zone refused, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSE_REASONS:
            self.refused.labels(reason)
        self.acked = Gauge(
            "resolverguard_export_secondary_serial",
            "Last export serial each configured secondary acknowledged (NOTIFY)",
            ["secondary"],
            registry=registry,
            multiprocess_mode="max",
        )
        for secondary in secondaries:
            self.acked.labels(secondary)


__all__ = [
    "DEFAULT_KEEP",
    "ExportMetrics",
    "TsigKey",
    "ZoneExport",
    "axfr_response",
    "load_tsig",
    "setup_export",
    "check_secondary",
    "transfer_messages",
]
