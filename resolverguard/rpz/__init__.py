"""RPZ zone files → PolicyTable: operator overrides looked up by hash per query.

Modules: ``table`` (RpzHit, RpzZone, PolicyTable: the pure per-query lookup), ``load`` (reading files, the only
I/O), ``fastload`` (simple policy lines read without dnspython), ``builder`` (a parsed zone → an indexed
RpzZone), ``diagnostics`` (owner → line pre-scan, file:line error messages), ``client_ip`` (CLIENT-IP triggers).

Supported (see docs/rpz.md for the full story):

* Triggers: QNAME (``army.ml`` exact, ``*.army.ml`` every name below it) and CLIENT-IP
  (``24.0.2.0.192.rpz-client-ip`` = 192.0.2.0/24, ``128.1.zz.db8.2001.rpz-client-ip`` = 2001:db8::1/128).
  RPZ-IP, NSDNAME and NSIP triggers are *not* supported: such rules are skipped and reported in
  ``RpzZone.warnings`` (the rest of the zone loads).
* Actions: ``CNAME .`` NXDOMAIN, ``CNAME *.`` NODATA, ``CNAME rpz-passthru.`` PASSTHRU (and the legacy
  CNAME to the trigger's own name), ``CNAME rpz-drop.`` DROP, ``CNAME rpz-tcp-only.`` TCP-ONLY; any
  other RRsets are Local Data, answered as given; ``CNAME *.garden.example.`` prepends the query name.
* Zone origin: the first ``$ORIGIN`` before any record, else the file stem plus ``.``
  (``10-overrides.rpz`` → ``10-overrides.``). Owner names are relative to that origin; an owner
  outside it (usually an absolute name written with a trailing dot) is an error.
* Zone name (metrics label, ``RpzHit.zone``): the ``name`` argument, else the file stem.

Precedence (``PolicyTable.lookup``): the first configured zone that matches at all decides, PASSTHRU
included (Unbound's behaviour; PowerDNS would go on to later zones after a PASSTHRU). Inside one zone:
CLIENT-IP beats QNAME, the longest client prefix wins, an exact QNAME beats a wildcard, and the wildcard
with more labels wins. Every step is a dict lookup: cost grows with the qname's label count and the
number of distinct client prefix lengths, never with the number of rules.
"""

from resolverguard.rpz.client_ip import encode_client_ip, parse_client_ip
from resolverguard.rpz.load import load_rpz, load_rpz_text, load_zone_dir
from resolverguard.rpz.table import ACTIONS, TRIGGERS, PolicyTable, RpzHit, RpzZone

__all__ = [
    "ACTIONS",
    "TRIGGERS",
    "PolicyTable",
    "RpzHit",
    "RpzZone",
    "encode_client_ip",
    "load_rpz",
    "load_rpz_text",
    "load_zone_dir",
    "parse_client_ip",
]
