"""Issue 22: precision. Real domains near protected names are never blocked, and the false-positive
rate is printed per corpus next to the recall tables (tests/unit/test_typo_recall.py).

* the names issue 22 found blocked on the previous main, with their mail hosts (mx., smtp., mail.);
* a near-miss set of real domains (tests/data/near-miss-domains.txt, provenance on each line);
* two legitimate corpora the guard does not ship: PyPI freemail and PyPI AcademicEmailVerifier.
"""

from __future__ import annotations

import pathlib
from importlib import metadata

import pytest

from resolverguard import names
from resolverguard.typo import TypoGuard, neighbours
from resolverguard.typo.lists import established_domains
from tests.unit.test_typo_recall import PROTECTED

EXTRA = ["fastmail.com", "nasa.gov", "mail.mil", "microsoft.com", "nhs.net", "paypal.com", "state.gov"]
ISSUE_22 = (
    "yahoo.ne.jp yahoo.com.ua yahoo.lt aol.it aol.com.br live.co.kr live.hk hotmail.com.hk hotmail.ph paypal.fr "
    "paypal.co.uk paypal.ca amazon.cn gov.scot gov.nl gov.ru nhs.scot nhs.wales state.nj.us apple.de boeing.co.uk "
    "orange.es nsa.gov hhs.gov mail.dk mail.ie mail.com.ar easemail.com fusemail.com contoso.onmicrosoft.com "
    "contoso.mail.onmicrosoft.com"
).split()
HOSTS = ("", "mx.", "smtp.", "mail.")
NEAR_MISS_TARGET, CORPUS_TARGET = 0.02, 0.0002
DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "near-miss-domains.txt"


@pytest.fixture(scope="module")
def guard() -> TypoGuard:
    return TypoGuard.build(sorted(set(PROTECTED + EXTRA)), cache_size=0)


@pytest.mark.parametrize("name", ISSUE_22)
def test_issue_22_real_domains_and_their_mail_hosts_are_allowed(guard: TypoGuard, name: str) -> None:
    flagged = [(h + name, m.typo_class) for h in HOSTS if (m := guard.find_neighbour(h + name)) and m.blocks]
    assert not flagged


@pytest.mark.parametrize(
    ("qname", "protected", "typo_class"),
    [
        ("army.ml", "army.mil", "tld_typo"),
        ("army.ac", "army.mil", "tld_swap"),  # a restricted name's label under an open suffix still blocks
        ("mod.co.uk", "mod.gov.uk", "tld_swap"),
        ("fastmial.com", "fastmail.com", "transposition"),
        ("fsatmial.com", "fastmail.com", "two_edits"),  # two edits, not both before the shared word
        ("raythneo.com", "raytheon.com", "two_edits"),
        ("mail.ml", "mail.mil", "tld_typo"),
    ],
)
def test_typos_next_to_the_precision_rules_still_block(
    guard: TypoGuard, qname: str, protected: str, typo_class: str
) -> None:
    match = guard.find_neighbour(qname)
    assert match is not None and match.blocks and (match.protected, match.typo_class) == (protected, typo_class)


def test_private_section_public_suffixes_are_never_neighbours(guard: TypoGuard) -> None:
    private = sorted(s for s in names.private_suffixes() if "." in s and s.split(".")[0] in ("gov", "blogspot"))
    assert {"gov.scot", "gov.nl", "gov.ru", "blogspot.com"} <= set(private)
    assert [s for s in private if guard.find_neighbour(s)] == []


def _near_miss() -> list[str]:
    text = DATA.read_text(encoding="utf-8")
    return sorted({line.split("#", 1)[0].strip() for line in text.splitlines()} - {""})


def _corpora() -> dict[str, list[str]]:
    path = metadata.distribution("freemail").locate_file("freemail/data/free.txt")
    with open(path, encoding="utf-8") as handle:
        free = sorted({line.strip().lower() for line in handle if line.strip()})
    import AcademicEmailVerifier  # swot-style tree: domains/<tld>/<label>.txt is <label>.<tld>

    root = pathlib.Path(AcademicEmailVerifier.__file__).parent / "domains"
    academic = sorted(
        {".".join(reversed(p.relative_to(root).with_suffix("").parts)) for p in root.rglob("*.txt")}
        - {"stoplist", "tlds"}
    )
    return {
        f"freemail {metadata.version('freemail')}": free,
        f"AcademicEmailVerifier {metadata.version('AcademicEmailVerifier')}": academic,
    }


def test_false_positives_per_corpus_and_near_miss_set(guard: TypoGuard, capsys: pytest.CaptureFixture[str]) -> None:
    near = _near_miss()
    assert len(near) >= 300
    near_blocked = [(d, m.protected, m.typo_class) for d in near if (m := guard.find_neighbour(d)) and m.blocks]
    hosts_blocked = [h + d for d in near for h in HOSTS[1:] if (m := guard.find_neighbour(h + d)) and m.blocks]
    hosts_blocked = [h for h in hosts_blocked if names.registrable(h) not in {b[0] for b in near_blocked}] + [
        h + d for d, *_ in near_blocked for h in HOSTS[1:]
    ]
    protected_blocked = [h + p for p in PROTECTED + EXTRA for h in HOSTS if guard.find_neighbour(h + p)]
    rows = []
    for corpus, domains in _corpora().items():
        blocked = [(d, m.protected, m.typo_class) for d in domains if (m := guard.find_neighbour(d)) and m.blocks]
        rows.append((corpus, len(domains), blocked))
    with capsys.disabled():
        print("\nfalse positives (issue 22) | names | blocked | rate | target")
        print(
            f"| near-miss set ({DATA.name}) | {len(near)} | {len(near_blocked)} | "
            f"{len(near_blocked) / len(near):.2%} | <= {NEAR_MISS_TARGET:.0%} | {near_blocked}"
        )
        print(
            f"| mail hosts (mx./smtp./mail.) under near-miss names | {3 * len(near)} | {len(hosts_blocked)} | - | 0 |"
        )
        print(
            f"| protected names and their mail hosts | {len(HOSTS) * len(PROTECTED + EXTRA)} | "
            f"{len(protected_blocked)} | - | 0 |"
        )
        for corpus, total, blocked in rows:
            print(
                f"| corpus {corpus} | {total} | {len(blocked)} | {len(blocked) / total:.3%} | "
                f"<= {CORPUS_TARGET:.2%} | {blocked[:10]}"
            )
    assert not protected_blocked
    assert len(near_blocked) / len(near) <= NEAR_MISS_TARGET, near_blocked
    for corpus, total, blocked in rows:
        assert len(blocked) / total <= CORPUS_TARGET, (corpus, blocked)


@pytest.mark.parametrize(
    ("qname", "protected", "typo_class"),
    [
        ("gmial.co", "gmail.com", "tld_typo"),  # label typo and suffix typo together
        ("aamzon.cm", "amazon.com", "tld_typo"),
        ("gnail.con", "gmail.com", "tld_typo"),
        ("mailgmail.com", "gmail.com", "dot_omission"),  # mail words glued, like www
        ("smtp-gmail.com", "gmail.com", "dot_omission"),
        ("xn--amazo-tye.com", "amazon.com", "idn_homoglyph"),  # amazoп.com, Cyrillic п folds to nothing
        ("xn--outloo-nze.com", "outlook.com", "idn_homoglyph"),  # outlooκ.com, Greek κ
        ("dsca.ml", "dsca.mil", "tld_typo"),  # .mil names the shipped list lacked
        ("ustranscom.ml", "ustranscom.mil", "tld_typo"),
        ("hpc.il", "hpc.mil", "tld_typo"),
        ("militaryonesource.ml", "militaryonesource.mil", "tld_typo"),
    ],
)
def test_recall_gaps_of_issue_22_are_caught(guard: TypoGuard, qname: str, protected: str, typo_class: str) -> None:
    match = guard.find_neighbour(qname)
    assert match is not None and match.blocks and (match.protected, match.typo_class) == (protected, typo_class)


def test_recall_of_label_and_suffix_typos_together(guard: TypoGuard, capsys: pytest.CaptureFixture[str]) -> None:
    """Every one-edit label variant (omission, transposition, replacement, repetition) of each protected
    label of 5+ characters under each listed one-edit typo of its suffix (gmial.co, aamzon.cm)."""
    total, missed = 0, []
    for domain in sorted(set(PROTECTED + EXTRA)):
        if "." not in domain or len(domain.split(".", 1)[0]) < 5:
            continue
        label, suffix = domain.split(".", 1)
        found = neighbours(domain)
        typo_suffixes = sorted({n.split(".", 1)[1] for n in found["tld_typo"]})
        for typo_class in ("omission", "transposition", "replacement", "repetition"):
            for variant in found[typo_class]:
                for typo_suffix in typo_suffixes:
                    name = variant.rsplit("." + suffix, 1)[0] + "." + typo_suffix
                    if name in established_domains():
                        continue
                    total += 1
                    match = guard.find_neighbour(name)
                    if match is None or not match.blocks:
                        missed.append(name)
    with capsys.disabled():
        print(
            f"\nlabel typo + suffix typo together: {total - len(missed)} of {total} blocked = "
            f"{(total - len(missed)) / total:.2%} (target >= 99.5%) missed e.g. {missed[:6]}"
        )
    assert (total - len(missed)) / total >= 0.995, missed[:20]


@pytest.mark.parametrize(("qname", "protected"), [("0r4nge.fr", "orange.fr"), ("4m4zon.com", "amazon.com")])
def test_digits_for_letters_twice_are_numerals(qname: str, protected: str) -> None:
    guard = TypoGuard.build(["orange.fr", "amazon.com"], cache_size=0)
    match = guard.find_neighbour(qname)
    assert match is not None and match.blocks and (match.protected, match.typo_class) == (protected, "numeral")
