"""Sphinx extension of the dtlspeer site: one source of truth, nothing undocumented.

1. **The reference is generated.** At ``builder-inited`` every public module of
   the package (``pkgutil``: each ``dtlspeer.<name>`` not starting with ``_``)
   gets a page ``api/<name>.md`` holding its ``automodule``, and
   ``api/dtlspeer.md`` lists every name of ``dtlspeer.__all__`` with a
   cross-reference to where it is documented. A new module needs no edit here.
2. **Pages include README.md and docs/*.md instead of copying them.** In a
   page, a line ``% readme: TITLE`` is replaced (``source-read``) by README's
   section of that title (down to the next heading of the same level or
   higher), its headings shifted under the page's own; ``% repo-file: PATH``
   by a whole Markdown file of the repository (or, while that file does not
   exist yet, by one sentence saying so). Links in included text are
   rewritten: to the page that includes their target (a README section or
   repository file), or to the path as code when the site has no page for it.
   A marker naming a section that does not exist is a warning (so an error
   under ``-W``). A Godot mapping page is one such line (``godot/*.md``).
3. **Nothing public is undocumented.** When the build ends
   (``env-check-consistency``), every public module, class, function, method
   and property must have a docstring and appear in the Python domain (i.e.
   in the reference), and so must every object named in ``dtlspeer.__all__``;
   each gap is a warning. :func:`reference_gaps` is the check itself
   (``tests/test_docs.py`` tests it without Sphinx).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

PACKAGE = "dtlspeer"
REPO = Path(__file__).resolve().parents[3]
SITE = Path(__file__).resolve().parents[1]
API_DIR = SITE / "api"

README_MARKER = re.compile(r"^% readme: (?P<title>.+?)\s*$", re.M)
FILE_MARKER = re.compile(r"^% repo-file: (?P<path>\S+)\s*$", re.M)
HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+?)\s*$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


# ---- public API and the reference check ------------------------------------


def public_modules(package: ModuleType) -> list[str]:
    """``package`` and its public submodules (no leading underscore), sorted."""
    names = [package.__name__]
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            names.append(f"{package.__name__}.{info.name}")
    return sorted(names)


def _public_members(module: ModuleType) -> list[tuple[str, Any]]:
    """Classes and functions a module defines (its ``__all__`` when it has
    one, else every public name whose ``__module__`` is the module)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and \
                getattr(obj, "__module__", None) == module.__name__:
            out.append((name, obj))
    return out


def _class_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties a class itself defines (inherited ones
    are documented on their base; enum members are values, not objects)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if isinstance(func, property) or inspect.isfunction(func):
            out.append((name, func))
    return out


def _has_doc(obj: Any) -> bool:
    doc = obj.fget.__doc__ if isinstance(obj, property) and obj.fget else obj.__doc__
    return bool(doc and doc.strip())


def reference_gaps(package: ModuleType, documented: Optional[set[str]]) -> list[str]:
    """Every public object of ``package`` without a docstring, and (when
    ``documented``, the fully qualified names in the reference, is given)
    every one missing from the reference; ``[]`` when there is none."""
    gaps: list[str] = []

    def need(name: str, obj: Any) -> None:
        if not _has_doc(obj):
            gaps.append(f"{name}: no docstring")
        elif documented is not None and name not in documented:
            gaps.append(f"{name}: not in the reference")

    for module_name in public_modules(package):
        module = importlib.import_module(module_name)
        need(module_name, module)
        for name, obj in _public_members(module):
            qualified = f"{module_name}.{name}"
            need(qualified, obj)
            if inspect.isclass(obj):
                for member, value in _class_members(obj):
                    need(f"{qualified}.{member}", value)
    for name in getattr(package, "__all__", []):
        obj = getattr(package, name, None)
        if inspect.ismodule(obj):
            target = obj.__name__
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            target = f"{obj.__module__}.{obj.__qualname__}"
        else:
            continue  # data (__version__): documented in the package docstring
        if not _has_doc(obj):
            gaps.append(f"{package.__name__}.{name} ({target}): no docstring")
        elif documented is not None and target not in documented:
            gaps.append(f"{package.__name__}.{name} ({target}): not in the reference")
    return sorted(set(gaps))


# ---- generated reference pages ---------------------------------------------


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def write_reference(package: ModuleType) -> None:
    """``api/index.md``, ``api/<package>.md`` and one page per public module."""
    API_DIR.mkdir(exist_ok=True)
    modules = public_modules(package)
    pages = {}
    for module_name in modules[1:]:
        short = module_name.rsplit(".", 1)[1]
        pages[short] = (f"# `{module_name}`\n\n```{{eval-rst}}\n.. automodule:: {module_name}\n"
                        "```\n")
    # The names of `from dtlspeer import ...`, each declared here under that
    # name as an alias (:canonical:) of its module's object, so a reference to
    # either name resolves; the documentation itself is on the module's page.
    rows = []
    for name in package.__all__:
        obj = getattr(package, name)
        full = f"{package.__name__}.{name}"
        if inspect.ismodule(obj) or full in modules:  # a module, or shadows one
            target = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{name}"
            role = "mod" if inspect.ismodule(obj) else "func"
            rows.append(f"* :{role}:`{full} <{target}>`")
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            kind = "class" if inspect.isclass(obj) else "function"
            target = f"{obj.__module__}.{obj.__qualname__}"
            role = "class" if kind == "class" else "func"
            rows.append(f".. py:{kind}:: {name}\n   :module: {package.__name__}\n"
                        f"   :canonical: {target}\n\n   See :py:{role}:`{target}`.")
        else:
            rows.append(f".. py:data:: {name}\n   :module: {package.__name__}\n"
                        f"   :value: {obj!r}")
    pages[package.__name__] = (
        f"# `{package.__name__}`\n\n```{{eval-rst}}\n.. automodule:: {package.__name__}\n"
        "   :no-members:\n\n"
        f".. rubric:: The names of ``from {package.__name__} import ...``\n\n"
        + "\n\n".join(rows) + "\n```\n")
    index = ("# API reference\n\nGenerated from the docstrings: the package, then one page per "
             "public module.\n\n```{toctree}\n:maxdepth: 1\n\n"
             + "\n".join([package.__name__, *sorted(k for k in pages if k != package.__name__)])
             + "\n```\n")
    pages["index"] = index
    for stale in API_DIR.glob("*.md"):
        if stale.stem not in pages:
            stale.unlink()
    for name, text in pages.items():
        _write_if_changed(API_DIR / f"{name}.md", text)


# ---- README / repository files included in pages ---------------------------


def _sections(text: str) -> list[tuple[int, str, int, int]]:
    """(level, title, start line, end line) of every Markdown heading of
    ``text`` outside code fences; a section ends at the next heading of the
    same level or higher."""
    lines = text.splitlines()
    heads: list[tuple[int, str, int]] = []
    fenced = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            heads.append((len(m.group("hashes")), m.group("title"), i))
    out = []
    for k, (level, title, start) in enumerate(heads):
        end = next((s for lv, _, s in heads[k + 1:] if lv <= level), len(lines))
        out.append((level, title, start, end))
    return out


def slug(title: str) -> str:
    """The anchor MyST (like GitHub) makes of a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


class Includes:
    """Which page includes which README section or repository file, for
    rewriting links between them."""

    def __init__(self, site: Path) -> None:
        self.readme = (REPO / "README.md").read_text(encoding="utf-8")
        self.section_page: dict[str, str] = {}  # README anchor -> docname
        self.file_page: dict[str, str] = {}  # repository path -> docname
        sections = _sections(self.readme)
        for page in sorted(site.rglob("*.md")):
            if "_build" in page.parts or page.parent == API_DIR:
                continue
            docname = page.relative_to(site).with_suffix("").as_posix()
            text = page.read_text(encoding="utf-8")
            for m in README_MARKER.finditer(text):
                for _level, title, start, end in sections:
                    if title == m.group("title"):
                        for _, sub, s, _ in sections:
                            if start <= s < end:
                                self.section_page.setdefault(slug(sub), docname)
            for m in FILE_MARKER.finditer(text):
                self.file_page[m.group("path")] = docname

    def rewrite_links(self, text: str, docname: str, base: str) -> str:
        """Links of text included from ``base`` (a repository path) into
        page ``docname``."""
        here = Path(docname).parent

        def target_of(page: str, anchor: str = "") -> str:
            rel = os.path.relpath(page + ".md", here.as_posix() or ".")
            return f"{rel}#{anchor}" if anchor else rel

        def fix(m: re.Match[str]) -> str:
            label, target = m.group("text"), m.group("target")
            if re.match(r"^[a-z]+:", target):
                return m.group(0)  # https:, mailto:
            path, _, anchor = target.partition("#")
            if not path:  # an anchor of the including file
                page = self.section_page.get(anchor) if base == "README.md" else docname
                return f"[{label}]({target_of(page, anchor)})" if page else label
            repo_path = os.path.normpath(os.path.join(os.path.dirname(base), path))
            if repo_path == "README.md" and anchor in self.section_page:
                return f"[{label}]({target_of(self.section_page[anchor], anchor)})"
            if repo_path in self.file_page:
                return f"[{label}]({target_of(self.file_page[repo_path], anchor)})"
            # A file of the repository the site has no page for.
            shown = f"`{repo_path}`"
            if label.strip("`") == repo_path:
                return shown
            return f"{label} ({shown} in the repository)"

        out, fenced = [], False
        for line in text.splitlines():
            if FENCE.match(line):
                fenced = not fenced
            out.append(line if fenced else LINK.sub(fix, line))
        return "\n".join(out)

    def readme_section(self, title: str, depth: int) -> Optional[str]:
        """README's section ``title``, its heading moved to level ``depth``."""
        lines = self.readme.splitlines()
        for level, head, start, end in _sections(self.readme):
            if head == title:
                shift = depth - level
                body = []
                fenced = False
                for line in lines[start:end]:
                    if FENCE.match(line):
                        fenced = not fenced
                    m = None if fenced else HEADING.match(line)
                    if m:
                        line = "#" * min(6, len(m.group("hashes")) + shift) + " " + m.group("title")
                    body.append(line)
                return "\n".join(body)
        return None


# ---- Sphinx hooks -------------------------------------------------------------


def _logger() -> Any:
    from sphinx.util import logging

    return logging.getLogger("dtlspeer_docs")


def _builder_inited(app: Any) -> None:
    package = importlib.import_module(PACKAGE)
    write_reference(package)
    app.env.dtlspeer_includes = Includes(Path(app.srcdir))


def _source_read(app: Any, docname: str, source: list[str]) -> None:
    includes: Includes = app.env.dtlspeer_includes
    text = source[0]

    def readme(m: re.Match[str]) -> str:
        has_title = any(HEADING.match(line) and line.startswith("# ")
                        for line in text[: m.start()].splitlines())
        section = includes.readme_section(m.group("title"), 2 if has_title else 1)
        if section is None:
            _logger().warning(f"README.md has no section {m.group('title')!r}",
                              location=docname)
            return ""
        return includes.rewrite_links(section, docname, "README.md")

    def repo_file(m: re.Match[str]) -> str:
        path = m.group("path")
        file = REPO / path
        if not file.is_file():
            return (f"# {Path(path).stem.capitalize()}\n\n*`{path}` is not in this version of "
                    "the repository yet; this page shows it once it is.*")
        return includes.rewrite_links(file.read_text(encoding="utf-8"), docname, path)

    text = README_MARKER.sub(readme, text)
    source[0] = FILE_MARKER.sub(repo_file, text)


def _check_reference(app: Any, env: Any) -> None:
    documented = set(env.get_domain("py").objects)
    package = importlib.import_module(PACKAGE)
    for gap in reference_gaps(package, documented):
        _logger().warning(f"reference: {gap}")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _builder_inited)
    app.connect("source-read", _source_read)
    app.connect("env-check-consistency", _check_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
