"""The typo class vocabulary, per-class policies and the TypoMatch result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from resolverguard.codes import TypoClass
from resolverguard.errors import ConfigError

TYPO_CLASSES: tuple[str, ...] = tuple(TypoClass)  # fixed order (rank); label values and config keys
POLICIES = ("block", "log-only")
# Dictionary combinations are mostly brand abuse rather than typing mistakes, and they hit legitimate
# names far more often (armytimes.com): log them, do not block, by default. tld_swap blocks, but is only
# reported for protected names under restricted suffixes (army.mil -> army.ac); a brand under an open
# suffix usually owns its other ccTLDs (paypal.fr, yahoo.lt), so those are not reported (docs/typo.md).
DEFAULT_POLICY: Mapping[str, str] = {c: "log-only" if c == TypoClass.DICTIONARY else "block" for c in TYPO_CLASSES}
_DESCRIBE_LIMIT = 200


def resolve_policy(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """Merge per-class overrides into the defaults; ConfigError on an unknown class or policy."""
    policy = dict(DEFAULT_POLICY)
    for name, value in (overrides or {}).items():
        key = str(name).replace("-", "_")
        if key not in policy:
            raise ConfigError(f"unknown typo class {name!r}; known: {', '.join(TYPO_CLASSES)}")
        if value not in POLICIES:
            raise ConfigError(f"typo class {name!r}: policy must be one of {', '.join(POLICIES)}, not {value!r}")
        policy[key] = value
    return policy


@dataclass(frozen=True)
class TypoMatch:
    """A query name that resembles a protected domain."""

    qname: str
    neighbour: str  # the registrable (or parent) name that matched
    protected: str
    typo_class: str
    distance: int
    policy: str  # "block" | "log-only"
    learned: bool = False  # the protected name's label was learned from upstream answers (mil: dmdc)

    @property
    def blocks(self) -> bool:
        """True if the class policy is to block."""
        return self.policy == "block"

    def describe(self) -> str:
        """One ASCII line of at most 200 characters, fit for an EDE extra-text."""
        tail = f" resembles protected {self.protected} ({self.typo_class}, distance {self.distance})"
        neighbour = self.neighbour
        room = _DESCRIBE_LIMIT - len(tail)
        if len(neighbour) > room:
            neighbour = "..." + neighbour[-(room - 3) :]
        text = neighbour + tail
        return text.encode("ascii", "backslashreplace").decode("ascii")[:_DESCRIBE_LIMIT]
