"""The registry of label-level typo families, in match order: the first family with a hit wins.

Adding a family: one module with a LabelFamily subclass (its matcher and its generator side by side),
its class names in match.TYPO_CLASSES, and one line here.
"""

from __future__ import annotations

from resolverguard.typo.edits import OneEdit
from resolverguard.typo.family import LabelFamily
from resolverguard.typo.lookalike import LookAlikes
from resolverguard.typo.numerals import Numerals
from resolverguard.typo.twoedits import TwoEdits

LABEL_FAMILIES: tuple[type[LabelFamily], ...] = (OneEdit, LookAlikes, Numerals, TwoEdits)
