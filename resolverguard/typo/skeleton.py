"""Look-alike folding: IDN label decoding, a TS #39-style Unicode-to-ASCII fold and ASCII skeletons."""

from __future__ import annotations

import functools
import unicodedata

# Letters that neither NFKD nor the confusables table reduce to ASCII (dnstwist uses many of them).
_EXTRA_FOLD = {
    "æ": "ae",
    "œ": "oe",
    "ß": "ss",
    "ł": "l",
    "đ": "d",
    "ħ": "h",
    "ø": "o",
    "ŧ": "t",
    "ɨ": "i",
    "ƶ": "z",
    "ı": "i",
    "ȷ": "j",
    "ŋ": "n",
    "ĸ": "k",
    "ʒ": "3",
    "ƻ": "2",
    "ƽ": "5",
    "ɇ": "e",
    "ɍ": "r",
    "ɉ": "j",
    "ɏ": "y",
    "ƀ": "b",
    "ɖ": "d",
    "ɗ": "d",
    "ɓ": "b",
    "ƈ": "c",
    "ƥ": "p",
    "ƴ": "y",
    "ʠ": "q",
    "ɦ": "h",
    "ⱨ": "h",
    "ⱪ": "k",
    "ɱ": "m",
    "ꞑ": "n",
    "ɾ": "r",
    "ɽ": "r",
    "ɼ": "r",
    "ʂ": "s",
    "ƫ": "t",
    "ʉ": "u",
    "ᶌ": "v",
    "ⱴ": "v",
    "ⱱ": "v",
    "ⱳ": "w",
    "ⱬ": "z",
    "ʐ": "z",
    "ɫ": "l",
    "ɡ": "g",
    "ɢ": "g",
    "ʙ": "b",
    "ᴄ": "c",
    "ᴋ": "k",
    "ᴍ": "m",
    "ᴏ": "o",
    "ʀ": "r",
    "ꜱ": "s",
    "ᴜ": "u",
    "ᴠ": "v",
    "ᴡ": "w",
    "ʏ": "y",
    "ᴢ": "z",
    "ɪ": "i",
    "ɩ": "i",
    "ƅ": "b",
    "ǥ": "g",
    "ʝ": "j",
    "ƿ": "p",
    "ə": "a",
    "ɑ": "a",
    "ơ": "o",
    "ư": "u",
    "ʜ": "h",
    "к": "k",
    "ь": "b",
    "ԍ": "g",
    "т": "t",
    "ƒ": "f",
    "м": "m",
}

# Loose ASCII skeleton: one representative per class of single-character look-alikes (dnstwist's ASCII
# glyph map, closed under union): o0 l1i 38 69 bd ce gq uv mnr; w is vv, and runs of n collapse (m=rn=nn).
_LOOSE = str.maketrans("01i36bcgvmr", "oll89dequnn")
_LOOSE_BYTES = bytes.maketrans(b"01i36bcgvmr", b"oll89dequnn")  # bytes.translate is ~5x faster
# Look-alikes that change length, written in skeleton letters: FORWARD turns a protected skeleton into
# an intermediate (the index stores two forward steps, so no reverse rewrite is needed at query time).
FORWARD_RULES = (("d", "ld"), ("d", "dl"), ("d", "el"), ("h", "lh"), ("k", "le"), ("el", "d"))


@functools.cache
def _fold_table() -> dict[str, str]:
    """Map each non-ASCII character with an ASCII look-alike to that look-alike (lowercase)."""
    from confusable_homoglyphs import utils as confusable_utils  # loaded once, at build time

    table: dict[str, str] = {}
    for char, entries in confusable_utils.load("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        for entry in entries:
            target = entry.get("c", "")
            if target.isascii() and target.isalnum() and len(target) <= 2:
                table[char] = target.lower()
                break
    for code in range(0x80, 0x3000):
        char = chr(code)
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        if base and base.isascii() and base.isalnum():
            table[char] = base.lower()
    table.update(_EXTRA_FOLD)
    return table


def decode_label(label: str) -> str | None:
    """The Unicode text of an xn-- label, lowercased, or None if it does not decode."""
    try:
        return label[4:].encode("ascii").decode("punycode").lower()
    except (UnicodeError, ValueError):
        return None


def fold(text: str) -> str:
    """Replace every non-ASCII character that has an ASCII look-alike by it (TS #39 skeleton, to ASCII)."""
    if text.isascii():
        return text
    table = _fold_table()
    text = unicodedata.normalize("NFC", text)
    return "".join(table.get(c, c) if not c.isascii() else c for c in text)


def loose(ascii_label: str) -> str:
    """The loose skeleton: look-alike classes folded, w as uu, runs of n collapsed."""
    if ascii_label.isascii():
        s = ascii_label.encode("ascii").translate(_LOOSE_BYTES).decode("ascii")
    else:
        s = ascii_label.translate(_LOOSE)
    if "w" in s:
        s = s.replace("w", "uu")
    while "nn" in s:
        s = s.replace("nn", "n")
    return s


def strong(ascii_label: str) -> str:
    """The strong skeleton, for short labels: only the classic look-alikes 0/o, 1/l, rn/m, vv/w, cl/d."""
    return ascii_label.replace("0", "o").replace("1", "l").replace("rn", "m").replace("vv", "w").replace("cl", "d")


def rewrites(skeleton: str, rules: tuple[tuple[str, str], ...]) -> list[str]:
    """Every string obtained by applying one rule at one position of skeleton."""
    out = []
    for old, new in rules:
        start = skeleton.find(old)
        while start != -1:
            out.append(skeleton[:start] + new + skeleton[start + len(old) :])
            start = skeleton.find(old, start + 1)
    return out
