"""Source paths made publishable: a video's uri relative to a source root, never the curating machine's path.

A curated output (``OUT/manifests``, the scene JSON in ``OUT/shards``) records every input by the uri it was
read from, e.g. ``/home/alice/archive/films/a.mp4``: that is what a rerun and a takedown request need, and it
stays in ``OUT`` (the private copy). A release publishes the same records with each uri rewritten by
:meth:`SourcePaths.public`:

- under a source root (``--source-root``, repeatable; by default the deepest folder holding every local
  input, and per bucket the deepest prefix holding every object-store input): the path relative to it,
  ``films/a.mp4``;
- ``http(s)://`` URLs: unchanged (they are public addresses already);
- any other absolute path (outside every root): its file name only.

Free text (reject details, ``run.json``) is scrubbed of the roots, the output folder and the home folder.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
PUBLIC_SCHEMES = ("http", "https")


def _split(uri: str) -> tuple[str, str]:
    """``(scheme:// or "", path)``; local paths are made absolute and normalised."""
    m = _SCHEME.match(uri)
    if m:
        return m.group(0), uri[m.end() :]
    return "", os.path.abspath(os.path.expanduser(uri))


def default_roots(uris: Iterable[str]) -> list[str]:
    """The deepest common folder of the local uris, and of each bucket's uris (scheme and bucket kept).

    A common folder that is the file-system root (or a bare bucket) is no root: those uris keep only
    their file names.
    """
    groups: dict[str, list[str]] = {}
    for uri in uris:
        scheme, path = _split(uri)
        if scheme.rstrip(":/") in PUBLIC_SCHEMES:
            continue
        if scheme:
            bucket, _, rest = path.partition("/")
            groups.setdefault(scheme + bucket + "/", []).append("/" + rest)
        else:
            groups.setdefault("", []).append(path)
    roots = []
    for prefix, paths in groups.items():
        common = posixpath.commonpath([posixpath.dirname(p) for p in paths]) if prefix else None
        if not prefix:
            common = os.path.commonpath([os.path.dirname(p) for p in paths])
            if common != os.path.dirname(common):  # not "/"
                roots.append(common)
        elif common not in ("/", ""):
            roots.append(prefix + common.lstrip("/"))
    return roots


class SourcePaths:
    """Maps the uris of one curated output to their public form and scrubs free text of local paths.

    ``roots`` are source roots (local folders or ``scheme://bucket/prefix``); ``None`` means
    :func:`default_roots` of ``uris``. ``out_dir`` is the curated folder (shown as ``OUT``).
    """

    def __init__(self, uris: Iterable[str], roots: list[str] | None = None, out_dir: str | os.PathLike | None = None):
        uris = [u for u in uris if u]
        roots = default_roots(uris) if roots is None else roots
        # longest first, so that a nested root wins over its parent
        self.roots = sorted((self._norm_root(r) for r in roots), key=len, reverse=True)
        prefixes = [(r, "") for r in self.roots]
        if out_dir is not None and "://" not in str(out_dir):
            prefixes.append((os.path.abspath(out_dir) + "/", "OUT/"))
        home = os.path.expanduser("~")
        if home not in ("/", "~"):
            prefixes.append((home.rstrip("/") + "/", "~/"))
        self._prefixes = sorted(prefixes, key=lambda p: len(p[0]), reverse=True)

    @staticmethod
    def _norm_root(root: str) -> str:
        scheme, path = _split(root)
        return scheme + path.rstrip("/") + "/"

    def public(self, uri: str | None) -> str | None:
        """The publishable form of ``uri`` (see the module docstring); ``None`` and ``""`` pass through."""
        if not uri:
            return uri
        scheme, path = _split(uri)
        if scheme.rstrip(":/") in PUBLIC_SCHEMES:
            return uri
        full = scheme + path
        for root in self.roots:
            if full.startswith(root):
                return full[len(root) :]
        return posixpath.basename(path.rstrip("/")) or uri

    def scrub(self, text: str | None, uri: str | None = None) -> str | None:
        """``text`` with ``uri`` (when given) replaced by its public form, then every root, the output folder
        and the home folder removed from the paths it mentions."""
        if not text or "/" not in text:
            return text
        if uri and uri in text:
            text = text.replace(uri, self.public(uri) or "")
        for prefix, repl in self._prefixes:
            bare = prefix.rstrip("/")
            if bare in text:  # "ROOT/..." loses the root; "ROOT" alone (not "ROOTx") becomes the replacement
                pattern = r"(?<![\w.~-])" + re.escape(bare) + r"(/|(?![\w.-]))"
                text = re.sub(pattern, lambda m, r=repl: r if m.group(1) else (r.rstrip("/") or "."), text)
        return text

    def scrub_tree(self, obj):
        """``scrub`` applied to every string of a JSON-like tree; strings that are absolute local paths get
        their public form."""
        if isinstance(obj, dict):
            return {k: self.scrub_tree(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.scrub_tree(v) for v in obj]
        if isinstance(obj, str):
            if os.path.isabs(obj) or _SCHEME.match(obj):
                scrubbed = self.scrub(obj)
                return scrubbed if scrubbed != obj else self.public(obj)
            return self.scrub(obj)
        return obj
