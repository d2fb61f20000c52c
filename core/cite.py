"""Citations rendered from a spec's structured citation: BibTeX and a plain reference line."""

from __future__ import annotations

import re
import unicodedata

from papers.spec import Citation, Spec

_ENTRY_TYPE = {
    "conference": "inproceedings",
    "journal": "article",
    "preprint": "misc",
    "report": "techreport",
    "thesis": "phdthesis",
}
_VENUE_FIELD = {"conference": "booktitle", "journal": "journal", "report": "institution", "thesis": "school"}
_SPECIAL = re.compile(r"([&%$#_{}])")
_STOPWORDS = {"a", "an", "the", "on", "of", "for", "in", "and", "to", "with"}


def _escape(text: str) -> str:
    text = text.replace("\\", r"\textbackslash{}")
    text = _SPECIAL.sub(r"\\\1", text)
    return text.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def cite_key(citation: Citation) -> str:
    """``simonyan2015very``: first author's family name, year, first significant title word."""
    family = re.sub(r"[^a-z]", "", _ascii(citation.authors[0].split()[-1]).lower()) or "anon"
    words = [re.sub(r"[^a-z0-9]", "", _ascii(w).lower()) for w in citation.title.split()]
    first = next((w for w in words if w and w not in _STOPWORDS), "")
    return f"{family}{citation.year}{first}"


def bibtex(spec: Spec) -> str:
    """A BibTeX entry: type and venue field by the kind of publication, arXiv eprint fields if any."""
    c = spec.citation
    fields: list[tuple[str, str]] = [
        ("title", "{" + _escape(c.title) + "}"),  # double braces keep the title's capitals
        ("author", " and ".join(_escape(a) for a in c.authors)),
        ("year", str(c.year)),
    ]
    venue = c.venue_full or c.venue
    if c.kind in _VENUE_FIELD:
        fields.append((_VENUE_FIELD[c.kind], _escape(venue)))
    elif c.arxiv is None:
        fields.append(("howpublished", _escape(venue)))
    for name in ("volume", "number", "pages", "publisher", "doi", "url"):
        value = getattr(c, name)
        if value:
            fields.append((name, value if name in ("doi", "url") else _escape(value)))
    if c.arxiv:
        fields += [("eprint", c.arxiv), ("archivePrefix", "arXiv")]
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@{_ENTRY_TYPE[c.kind]}{{{cite_key(c)},\n{body}\n}}\n"


def reference(spec: Spec) -> str:
    """One line: authors, year, title, venue, link."""
    c = spec.citation
    authors = ", ".join(c.authors[:-1]) + (" and " if len(c.authors) > 1 else "") + c.authors[-1]
    link = f" arXiv:{c.arxiv}." if c.arxiv else f" doi:{c.doi}." if c.doi else f" {c.url}" if c.url else ""
    return f"{authors} ({c.year}). {c.title}. {c.venue_full or c.venue}.{link}\n"
