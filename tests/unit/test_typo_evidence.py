"""Ownership evidence (typo/evidence.py): the verdict rules and the bounded TTL cache."""

from __future__ import annotations

from resolverguard.typo.evidence import EvidenceCache, EvidenceVerdict, Observation, blocks, verdict

PAYPAL_NS = frozenset({"ns1.p57.dynect.net", "pdns100.ultradns.com"})


def test_nxdomain_blocks_at_no_cost() -> None:
    found = verdict("paypal.com", Observation(True, False, frozenset(), PAYPAL_NS))
    assert found is EvidenceVerdict.NXDOMAIN and blocks(found, data_blocks=False)


def test_same_ns_set_and_resolving_is_the_brands_own() -> None:
    found = verdict("paypal.com", Observation(False, True, PAYPAL_NS, PAYPAL_NS))
    assert found is EvidenceVerdict.OWNED and not blocks(found, data_blocks=True)


def test_nameservers_under_the_protected_domain_are_ownership() -> None:
    obs = Observation(False, True, frozenset({"ns1.paypal.com.", "NS2.PAYPAL.COM"}), PAYPAL_NS)
    assert verdict("paypal.com", obs) is EvidenceVerdict.OWNED


def test_shared_hosting_and_foreign_delegation_are_not_ownership() -> None:
    shared = Observation(False, True, frozenset({"ns1.squatter-dns.net"}), PAYPAL_NS)
    assert verdict("paypal.com", shared) is EvidenceVerdict.UNOWNED
    not_resolving = Observation(False, False, PAYPAL_NS, PAYPAL_NS)  # parked delegation copy, no data
    assert verdict("paypal.com", not_resolving) is EvidenceVerdict.UNOWNED
    lookalike_ns = Observation(False, True, frozenset({"ns1.paypal.com.evil.net"}), PAYPAL_NS)
    assert verdict("paypal.com", lookalike_ns) is EvidenceVerdict.UNOWNED


def test_timeout_keeps_the_data_decision() -> None:
    found = verdict("paypal.com", Observation(False, False, frozenset(), PAYPAL_NS, timed_out=True))
    assert found is EvidenceVerdict.UNKNOWN
    assert blocks(found, data_blocks=True) and not blocks(found, data_blocks=False)


def test_cache_expires_is_bounded_and_counts_each_verdict() -> None:
    now = [100.0]
    cache = EvidenceCache(max_entries=2, ttl=10, clock=lambda: now[0])
    assert cache.counts == {v: 0 for v in EvidenceVerdict}
    cache.put("a.fr", EvidenceVerdict.OWNED)
    cache.put("b.fr", EvidenceVerdict.NXDOMAIN)
    assert cache.get("a.fr") is EvidenceVerdict.OWNED  # a.fr is now the most recently used
    cache.put("c.fr", EvidenceVerdict.UNOWNED)
    assert len(cache) == 2 and cache.get("b.fr") is None and cache.get("a.fr") is EvidenceVerdict.OWNED
    cache.put("d.fr", EvidenceVerdict.UNKNOWN)  # counted, not cached: asked again next time
    assert cache.get("d.fr") is None and cache.counts[EvidenceVerdict.UNKNOWN] == 1
    now[0] += 11
    assert cache.get("a.fr") is None and cache.get("c.fr") is None
