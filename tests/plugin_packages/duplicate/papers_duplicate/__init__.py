"""A plugin that claims the paper id of the built-in VGG plugin."""

from papers.hookspecs import hookimpl
from papers.spec import Spec


@hookimpl
def papers_specs():
    return [
        Spec.model_validate(
            {
                "id": "vgg",
                "name": "Another VGG",
                "topics": ["classification"],
                "citation": {
                    "title": "Another",
                    "authors": ["Someone"],
                    "year": 2020,
                    "venue": "X",
                    "kind": "preprint",
                },
                "summary": "Claims an id that is taken.",
            }
        )
    ]
