"""Shared builders for the pure-core unit tests: queries from dnspython, RPZ zones from text, policies."""

from __future__ import annotations

import dns.message

from resolverguard import wire
from resolverguard.policy import Policy
from resolverguard.rpz import PolicyTable, load_rpz_text
from resolverguard.typo import TypoGuard

HEAD = (
    "$ORIGIN rpz.test.\n$TTL 300\n@ SOA ns.rpz.invalid. hostmaster.rpz.invalid. 1 3600 600 86400 60\n  NS ns.invalid.\n"
)


def query(name: str = "a.example", qtype: str = "A", client: str = "127.0.0.1", tcp: bool = False, **kw) -> wire.Query:
    """A parsed client query (dnspython builds the wire form)."""
    return wire.parse_query(dns.message.make_query(name, qtype, **kw).to_wire(), client, tcp)


def table(rules: str = "") -> PolicyTable:
    """A PolicyTable of one zone `overrides` holding ``rules`` (owners relative to rpz.test.)."""
    return PolicyTable([load_rpz_text(HEAD + rules, "overrides.rpz", name="overrides")] if rules else [])


def policy(rules: str = "", protect: tuple[str, ...] = ("army.mil", "gmail.com"), class_policy=None, **kw) -> Policy:
    guard = TypoGuard.build(protect, class_policy=class_policy)
    return Policy(table=table(rules), guard=guard, **kw)
