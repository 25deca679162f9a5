"""The documentation site's completeness check (docs/site/_ext/dtlspeer_docs.py)
finds what it must, and the package passes it. The site itself is built by
.ci/run (Sphinx, -W -n: every warning an error, every reference resolved);
these tests need no Sphinx."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import dtlspeer

EXT = Path(__file__).resolve().parent.parent / "docs" / "site" / "_ext"
pytestmark = pytest.mark.skipif(not EXT.is_dir(), reason="needs a source checkout (docs/site)")


@pytest.fixture
def docs_ext() -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXT))
    try:
        yield importlib.import_module("dtlspeer_docs")
    finally:
        sys.path.remove(str(EXT))


def test_every_public_object_of_dtlspeer_has_a_docstring(docs_ext: ModuleType) -> None:
    assert docs_ext.reference_gaps(dtlspeer, None) == []
    modules = docs_ext.public_modules(dtlspeer)
    assert {"dtlspeer", "dtlspeer.dtls", "dtlspeer.host", "dtlspeer.variant"} <= set(modules)
    assert not [m for m in modules if m.rsplit(".", 1)[-1].startswith("_")]


def test_the_check_reports_missing_docstrings_and_reference_entries(
    docs_ext: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        """A package."""
        from .mod import Documented, helper
        __all__ = ["Documented", "helper"]
    '''))
    (package / "mod.py").write_text(textwrap.dedent('''
        """A module."""
        class Documented:
            """A class."""
            def method(self):
                """A method."""
            def bare(self):
                pass
            @property
            def prop(self):
                return 1
            def _private(self):
                pass
        def helper():
            pass
    '''))
    (package / "_internal.py").write_text("def nothing():\n    pass\n")
    (package / "empty.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("fakepkg")
    assert docs_ext.reference_gaps(fake, None) == [
        "fakepkg.empty: no docstring",
        "fakepkg.helper (fakepkg.mod.helper): no docstring",
        "fakepkg.mod.Documented.bare: no docstring",
        "fakepkg.mod.Documented.prop: no docstring",
        "fakepkg.mod.helper: no docstring",
    ]
    documented = {"fakepkg", "fakepkg.mod", "fakepkg.mod.Documented"}
    gaps = docs_ext.reference_gaps(fake, documented)
    assert "fakepkg.mod.Documented.method: not in the reference" in gaps
    assert "fakepkg.mod.Documented: not in the reference" not in gaps


def test_readme_sections_are_cut_at_the_next_heading_of_their_level(docs_ext: ModuleType) -> None:
    includes = docs_ext.Includes(EXT.parent)
    section = includes.readme_section("Godot API mapping", 1)
    assert section.startswith("# Godot API mapping\n")
    assert "## Godot Variant" not in section and "# Godot Variant" not in section
    assert includes.readme_section("No such section", 1) is None
    # Every page marker names a README section that exists.
    for page in EXT.parent.rglob("*.md"):
        for match in docs_ext.README_MARKER.finditer(page.read_text(encoding="utf-8")):
            assert includes.readme_section(match.group("title"), 1), (page, match.group(0))
