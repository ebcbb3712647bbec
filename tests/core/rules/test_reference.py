"""docs/rules.md is generated from the catalogue and must be current."""

from pathlib import Path

from diagnose.core.rules import CATALOGUE
from diagnose.core.rules.reference import render

PAGE = Path(__file__).resolve().parents[3] / "docs" / "rules.md"


def test_the_checked_in_rule_reference_is_current():
    assert PAGE.read_text() == render(), "regenerate: python -m diagnose.core.rules.reference > docs/rules.md"


def test_every_rule_and_finding_id_is_on_the_page():
    text = render()
    for rules in CATALOGUE.values():
        for rule in rules:
            assert f"`{rule.name}`" in text
            assert all(f"`{e.id}`" in text for e in rule.emits)
