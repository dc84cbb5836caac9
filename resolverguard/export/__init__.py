"""The policy as an RPZ zone for other resolvers: records, transfer messages, TSIG, serving, publishing.

Split by concept (as dnspython splits zone / xfr / tsig): ``records`` (policy → the zone's records and
its text; pure), ``render`` (AXFR/IXFR reply messages; pure), ``tsig`` (keys), ``serve`` (ACL, TSIG
check, answering SOA/AXFR/IXFR), ``publish`` (rebuild on change, serial), ``journal`` (versions and
deltas on disk, shared by the workers), ``notify`` (NOTIFY to the secondaries). The names below are the
package's entry points.
"""

from ..metrics import ExportMetrics  # declared in metrics.py, on the tally with every other metric
from .journal import DEFAULT_KEEP, Delta, Journal
from .records import (
    DEFAULT_ORIGIN,
    EXPORT_ACTIONS,
    Export,
    Record,
    SerialStore,
    build_policy,
    build_rpz,
    render_policy,
    render_rpz,
)
from .render import axfr_response, transfer_messages
from .serve import TRANSFER_QTYPES, ZoneExport, setup_export
from .tsig import TsigKey, load_tsig

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_ORIGIN",
    "EXPORT_ACTIONS",
    "TRANSFER_QTYPES",
    "Delta",
    "Export",
    "ExportMetrics",
    "Journal",
    "Record",
    "SerialStore",
    "TsigKey",
    "ZoneExport",
    "axfr_response",
    "build_policy",
    "build_rpz",
    "load_tsig",
    "render_policy",
    "render_rpz",
    "setup_export",
    "transfer_messages",
]
