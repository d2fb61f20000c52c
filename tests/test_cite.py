"""Citations: BibTeX rendered from the structured citation, entry type by venue."""

from __future__ import annotations

from papers.cite import bibtex, cite_key, reference
from papers.spec import validate_spec
from tests.conftest import minimal_spec


def spec_with(**citation):
    data = minimal_spec()
    data["citation"].update(citation)
    return validate_spec(data)


def test_vgg_bibtex_through_the_cli(run):
    result = run("cite", "vgg16")
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith("@inproceedings{simonyan2015very,")
    assert "booktitle = {International Conference on Learning Representations (ICLR)}" in text
    assert "author = {Karen Simonyan and Andrew Zisserman}" in text
    assert "eprint = {1409.1556}" in text and "archivePrefix = {arXiv}" in text
    assert run("cite", "vgg", "--format", "text").stdout.startswith(
        "Karen Simonyan and Andrew Zisserman (2015)."
    )


def test_journal_papers_are_articles_with_journal_volume_and_pages():
    spec = spec_with(
        kind="journal",
        venue="Proc. IEEE",
        venue_full="Proceedings of the IEEE",
        volume="86",
        number="11",
        pages="2278--2324",
        doi="10.1109/5.726791",
        authors=["Yann LeCun", "Léon Bottou"],
    )
    text = bibtex(spec)
    assert text.startswith("@article{lecun2020tiny,")
    assert "journal = {Proceedings of the IEEE}" in text and "volume = {86}" in text
    assert "pages = {2278--2324}" in text and "doi = {10.1109/5.726791}" in text
    assert "eprint" not in text


def test_preprints_are_misc_and_special_characters_are_escaped():
    spec = spec_with(kind="preprint", venue="arXiv", arxiv="1503.02531", title="Nets & 100% {fun}_now")
    text = bibtex(spec)
    assert text.startswith("@misc{")
    assert r"title = {{Nets \& 100\% \{fun\}\_now}}" in text
    assert "howpublished" not in text, "the eprint fields say where a preprint is"


def test_cite_key_skips_stopwords_and_accents():
    spec = spec_with(title="The Élan of Deep Nets", authors=["Jürgen Schmidhuber"])
    assert cite_key(spec.citation) == "schmidhuber2020elan"
    assert reference(spec).startswith("Jürgen Schmidhuber (2020). The Élan of Deep Nets.")
