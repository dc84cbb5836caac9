"""TSIG keys of the export (RFC 8945): loaded from a secret file that only the guard's user may read."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.tsig
import dns.tsigkeyring

from ..errors import ConfigError


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


def configured_key(tsig: dict | None) -> TsigKey | None:
    """The key of ``[export] tsig`` (name, algorithm, secret_file), or None when it is not set."""
    if not tsig:
        return None
    return load_tsig(tsig["name"], tsig.get("algorithm", "hmac-sha256"), tsig["secret_file"])
