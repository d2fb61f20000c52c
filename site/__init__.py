"""The documentation site's sources (mkdocs.yml, jinja2 templates, static assets), installed as the
data package ``papers_site`` so that ``papers site build`` finds them in a wheel too."""
