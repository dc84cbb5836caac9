"""The fast RPZ line reader and dnspython agree on every zone: same rules, or the same error line."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from resolverguard.errors import ZoneFileError
from resolverguard.rpz import load_rpz_text

HEAD = "$ORIGIN rpz.test.\n$TTL 300\n@ SOA ns.invalid. h.invalid. 1 3600 600 86400 60\n  NS ns.invalid.\n"
OWNERS = [
    "a.example",
    "*.a.example",
    "B.example",
    "*",
    "x",
    "mail.x",
    "24.0.2.0.192.rpz-client-ip",
    "sub.*.bad",
    "a..b",
    "army.ml.",
    "very-long-" + "l" * 60 + ".example",
]
RDATA = [
    "CNAME .",
    "CNAME *.",
    "CNAME rpz-passthru.",
    "CNAME rpz-drop.",
    "CNAME rpz-tcp-only.",
    "IN CNAME .",
    "cname .",
    "A 192.0.2.1",
    'TXT "t"',
    "CNAME rpz-passthru",
    "CNAME sink.example.",
    "MX 10 mx.example.",
    "CNAME . ; comment",
    "A 192.0.2.300",
]
LINE = st.one_of(
    st.builds(
        lambda o, t, r: f"{o} {t}{r}",
        st.sampled_from(OWNERS),
        st.sampled_from(["", "60 ", "3600 "]),
        st.sampled_from(RDATA),
    ),
    st.builds(lambda r: f"  {r}", st.sampled_from(RDATA)),  # continuation: same owner as the line before
    st.sampled_from(["", "; comment", "$TTL 120", "$TTL 1h", "$ORIGIN other.test.", "x ( CNAME . )"]),
)


def outcome(text: str, fast_path: bool):
    try:
        zone = load_rpz_text(text, "t.rpz", name="t", fast_path=fast_path)
    except ZoneFileError as exc:
        return ("error", exc.line)
    rules = sorted((h.trigger, h.owner, h.action, h.ttl, h.line) for h in zone.rules)
    return ("ok", rules, sorted(zone.exact), sorted(zone.wildcard), zone.warnings)


@settings(max_examples=600, deadline=None)
@given(st.lists(LINE, max_size=12))
@example(["a.example CNAME .", '  TXT "t"'])  # a quoted record for the owner of a simple line
@example(["x CNAME .", "$TTL 1h", "y CNAME ."])
@example(["  A 192.0.2.300", "a.example CNAME .", "a..b CNAME ."])  # two broken lines: the first is named
def test_fast_reader_equals_dnspython(lines):
    text = HEAD + "\n".join(lines) + "\n"
    assert outcome(text, True) == outcome(text, False)


def test_fast_reader_takes_simple_lines_and_keeps_line_numbers():
    text = HEAD + "x CNAME .\n*.x CNAME rpz-passthru.\nlocal A 192.0.2.1\ny 60 IN CNAME *.\n"
    zone = load_rpz_text(text, "t.rpz", name="t")
    assert [(h.owner, h.action, h.line, h.ttl) for h in zone.rules] == [
        ("x", "nxdomain", 5, 300),
        ("*.x", "passthru", 6, 300),
        ("local", "local-data", 7, 300),
        ("y", "nodata", 8, 60),
    ]
