"""resolverguard: a DNS-layer guard against typo-neighbours of protected domains."""

__version__ = "0.1.0"
