"""CLIENT-IP triggers: ``24.0.2.0.192.rpz-client-ip`` <-> 192.0.2.0/24 (and IPv6, with ``zz`` for ``::``)."""

from __future__ import annotations

import ipaddress
import re

import dns.name

from resolverguard.rpz.diagnostics import one_line


def parse_client_ip(relative: dns.name.Name) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``24.0.2.0.192.rpz-client-ip`` → 192.0.2.0/24; ``128.1.zz.db8.2001.rpz-client-ip`` → 2001:db8::1/128.

    ``relative`` is the owner relative to the zone origin (its last label is the trigger label).
    Raises ValueError with a one-line reason.
    """
    labels = [lab.decode("ascii", "replace").lower() for lab in relative.labels[:-1]]
    if len(labels) < 2:
        raise ValueError("needs <prefix-length>.<reversed address>")
    plen_text, addr_labels = labels[0], labels[1:][::-1]
    if not plen_text.isdigit():
        raise ValueError(f"prefix length {plen_text!r} is not a number")
    plen = int(plen_text)
    is_v4 = len(addr_labels) == 4 and all(lab.isdigit() for lab in addr_labels)
    if is_v4:
        if plen < 1 or plen > 32:
            raise ValueError(f"IPv4 prefix length {plen} is outside 1..32")
        if any(len(lab) > 3 or int(lab) > 255 or (len(lab) > 1 and lab[0] == "0") for lab in addr_labels):
            raise ValueError(f"bad IPv4 address {'.'.join(addr_labels)}")
        address = ".".join(addr_labels)
    else:
        if plen < 1 or plen > 128:
            raise ValueError(f"IPv6 prefix length {plen} is outside 1..128")
        if addr_labels.count("zz") > 1:
            raise ValueError("more than one 'zz' in an IPv6 address")
        if "zz" not in addr_labels and len(addr_labels) != 8:
            raise ValueError(f"IPv6 address needs 8 groups or one 'zz', got {len(addr_labels)} labels")
        if "zz" in addr_labels and len(addr_labels) > 8:
            raise ValueError("IPv6 address with 'zz' has too many groups")
        for lab in addr_labels:
            if lab != "zz" and not re.fullmatch(r"[0-9a-f]{1,4}", lab):
                raise ValueError(f"bad IPv6 group {lab!r}")
        address = ":".join("" if lab == "zz" else lab for lab in addr_labels)
        if addr_labels[0] == "zz":
            address = ":" + address
        if addr_labels[-1] == "zz":
            address += ":"
    try:
        return ipaddress.ip_network(f"{address}/{plen}", strict=True)
    except ValueError as exc:
        raise ValueError(one_line(str(exc))) from None


def encode_client_ip(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The inverse of parse_client_ip: 192.0.2.0/24 → '24.0.2.0.192.rpz-client-ip'."""
    if network.version == 4:
        labels = str(network.network_address).split(".")
    else:
        compressed = network.network_address.compressed
        if "::" in compressed:
            left, right = compressed.split("::")
            labels = [*(left.split(":") if left else []), "zz", *(right.split(":") if right else [])]
        else:
            labels = compressed.split(":")
    return ".".join([str(network.prefixlen), *reversed(labels), "rpz-client-ip"])
