"""The one-line edit of the environment file a DC command makes (plinth/geo/model_file.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plinth.geo.model_file import with_active_datacenter, write_active_datacenter
from plinth.model import load_environment

EXAMPLE = Path(__file__).resolve().parents[1] / "inventory" / "example-prod.yaml"


def test_an_existing_line_changes_alone_and_keeps_its_comment() -> None:
    text = "name: x\n# the active site\nactive_datacenter: dc1   # moved by dc-switchover\n"
    assert with_active_datacenter(text, "dc2") == (
        "name: x\n# the active site\nactive_datacenter: dc2  # moved by dc-switchover\n"
    )


def test_a_missing_key_goes_after_kind() -> None:
    text = "# comment\nname: x\nkind: production\n\ndatacenters: []\n"
    assert with_active_datacenter(text, "dc2") == (
        "# comment\nname: x\nkind: production\nactive_datacenter: dc2\n\ndatacenters: []\n"
    )


def test_nested_keys_of_the_same_name_are_left_alone() -> None:
    text = "name: x\ncomponents:\n  active_datacenter: dc1\n"
    assert with_active_datacenter(text, "dc2") == (
        "name: x\nactive_datacenter: dc2\ncomponents:\n  active_datacenter: dc1\n"
    )


def test_a_bad_name_or_a_duplicate_is_refused() -> None:
    with pytest.raises(ValueError):
        with_active_datacenter("name: x\n", "dc2\nhosts: []")
    with pytest.raises(ValueError):
        with_active_datacenter("active_datacenter: a\nactive_datacenter: b\n", "dc2")


def test_the_example_file_changes_by_one_line_and_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    before = path.read_text().splitlines()
    assert write_active_datacenter(path, "dc2")
    after = path.read_text().splitlines()
    assert [line for line in after if line not in before] == ["active_datacenter: dc2"]
    assert [line for line in before if line not in after] == []
    assert load_environment(path).active_site == "dc2"
    assert not write_active_datacenter(path, "dc2")  # already: untouched
    assert write_active_datacenter(path, "dc1")
    assert load_environment(path).active_site == "dc1"
    assert [line for line in path.read_text().splitlines() if line not in before] == [
        "active_datacenter: dc1"
    ]


def test_an_unknown_datacenter_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    with pytest.raises(Exception, match="dc9"):
        write_active_datacenter(path, "dc9")
    assert path.read_text() == EXAMPLE.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [EXAMPLE.name]
