"""docs/geo-redundancy.md shows the plans of plinth/geo/examples.py as the plan functions
make them today (``python -m plinth.geo.examples`` rewrites them), and says at the top
what is built and what is not."""

from __future__ import annotations

from plinth.geo import examples


def test_the_generated_step_lists_are_current() -> None:
    text = examples.DOC.read_text()
    assert examples.rewrite(text) == text, "run: python -m plinth.geo.examples"


def test_every_example_is_shown_once() -> None:
    text = examples.DOC.read_text()
    for name in examples.scenarios():
        assert text.count(f"<!-- generated: {name} -->") == 1, name


def test_the_page_says_what_is_built_and_what_is_not() -> None:
    text = examples.DOC.read_text()
    box = text[: text.index("## The model")].splitlines()
    status = " ".join(line.lstrip("> ").strip() for line in box).replace("*", "")
    assert "The decision layer is built and unit-tested" in status
    assert "plinth dc-switchover ENV --to DC [--yes] [--dry]` is built" in status
    assert "has not been run yet" in status  # the full-lab drill: written, not run
    assert "`dc-failover` and `dc-failback` are not built" in status
