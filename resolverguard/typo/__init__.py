"""The typo-neighbour detector: protected domains in, TypoGuard.find_neighbour(qname) out; pure."""

from resolverguard.typo.generate import neighbours
from resolverguard.typo.index import TypoGuard
from resolverguard.typo.lists import load_domain_list
from resolverguard.typo.match import TYPO_CLASSES, TypoMatch

__all__ = ["TYPO_CLASSES", "TypoGuard", "TypoMatch", "load_domain_list", "neighbours"]
