from pathlib import Path

from e2urec import docs
from e2urec.methods import REGISTRY

METHODS_MD = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def test_every_option_has_a_help_text():
    classes = [m.Options for m in REGISTRY.values()] + [
        docs.PrepareConfig, docs.BackboneConfig, docs.TrainConfig, docs.Verification,
        docs.Scenario]
    missing = [f"{cls.__name__}.{name}" for cls in classes for name, _, text in docs.rows(cls)
               if not text]
    assert missing == []


def test_docs_methods_md_is_generated_from_the_options():
    assert METHODS_MD.read_text() == docs.render(), (
        "docs/methods.md is stale: run `python -m e2urec.docs > docs/methods.md`")
