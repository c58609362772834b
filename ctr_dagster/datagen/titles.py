"""Readable English product titles that state exactly the attribute values flagged `in_title`.

Several templates put the same values in different places ("Acme red cotton casual shirt",
"Casual red shirt by Acme in cotton", ...) and optional filler words add noise, so a text model
(or extractor) has to read the title rather than rely on fixed offsets.
"""

from __future__ import annotations

#: Each template is a sequence of tokens; "{attr}" tokens are dropped when the value is not stated.
TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{brand}", "{colour}", "{material}", "{style}", "NOUN"),
    ("{style}", "{colour}", "NOUN", "by {brand}", "in {material}"),
    ("{brand}", "{material}", "NOUN", "in {colour}", "- {style} look"),
    ("{colour}", "{style}", "{material}", "NOUN", "from {brand}"),
    ("{brand}", "{style}", "NOUN", "({colour})", "made of {material}"),
)


def make_title(
    template: int, noun: str, stated: dict[str, str], prefix: str | None = None, suffix: str | None = None
) -> str:
    """Compose a title from `stated` (attribute -> value) only; values absent from it never appear."""
    words: list[str] = [prefix] if prefix else []
    for token in TEMPLATES[template]:
        if token == "NOUN":
            words.append(noun)
            continue
        attribute = token[token.index("{") + 1 : token.index("}")]
        if attribute in stated:
            words.append(token.replace("{" + attribute + "}", stated[attribute]))
    if suffix:
        words.append(suffix)
    title = " ".join(words)
    return title[0].upper() + title[1:]
