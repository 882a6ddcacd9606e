"""The version-control state a VCS version scheme (setuptools-scm, hatch-vcs, pdm-backend) derives a version from.

``git describe`` depends on the checked-out commit, every tag (a new tag on an ancestor changes the nearest one)
and whether the work tree differs from the commit. The first two are read here straight from the repository's
files (HEAD, loose refs, packed-refs) without starting ``git``, so a no-change rebuild stays subprocess-free;
the work tree's content is hashed by the caller, and together with the commit it decides the dirty state.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["vcs_state", "maybe_tracked"]


def _git_dir(project_dir: Path) -> tuple[Path, Path] | None:
    """(the work tree's git dir, the common dir holding refs) of the repository containing ``project_dir``."""
    for here in (project_dir, *project_dir.parents):
        dot = here / ".git"
        if dot.is_dir():
            git_dir = dot
        elif dot.is_file():  # a linked worktree or submodule: "gitdir: PATH"
            text = dot.read_text(errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (here / text.partition(":")[2].strip()).resolve()
        else:
            continue
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        return git_dir, common
    return None


def _packed_refs(common: Path) -> dict[str, str]:
    refs: dict[str, str] = {}
    path = common / "packed-refs"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line and line[0] not in "#^":
                oid, _, name = line.partition(" ")
                refs[name.strip()] = oid
    return refs


def _loose_refs(common: Path, prefix: str) -> dict[str, str]:
    root = common / prefix
    refs: dict[str, str] = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):
                refs[path.relative_to(common).as_posix()] = path.read_text(errors="replace").strip()
    return refs


def _git_state(git_dir: Path, common: Path) -> dict[str, object]:
    packed = _packed_refs(common)
    head = (git_dir / "HEAD").read_text(errors="replace").strip() if (git_dir / "HEAD").is_file() else ""
    commit = head
    if head.startswith("ref:"):
        ref = head.partition(":")[2].strip()
        loose = (common / ref) if not (git_dir / ref).is_file() else (git_dir / ref)
        commit = loose.read_text(errors="replace").strip() if loose.is_file() else packed.get(ref, "")
    tags = {name: oid for name, oid in packed.items() if name.startswith("refs/tags/")}
    tags.update(_loose_refs(common, "refs/tags"))
    shallow = (common / "shallow").read_text(errors="replace") if (common / "shallow").is_file() else ""
    return {"kind": "git", "head": head, "commit": commit, "tags": tags, "shallow": shallow}


def _hg_state(hg_dir: Path) -> dict[str, object]:
    dirstate = hg_dir / "dirstate"
    parents = dirstate.read_bytes()[:40].hex() if dirstate.is_file() else ""  # the two parent node ids
    tags = (hg_dir / "localtags").read_text(errors="replace") if (hg_dir / "localtags").is_file() else ""
    return {"kind": "hg", "parents": parents, "localtags": tags}  # .hgtags is a tracked file: hashed as content


def vcs_state(project_dir: Path) -> dict[str, object] | None:
    """The commit checked out and every tag (name → object id) of the git repository holding ``project_dir``
    (or a Mercurial one's parents), None outside a repository. Cheap: a few small file reads."""
    found = _git_dir(project_dir)
    if found is not None:
        return _git_state(*found)
    for here in (project_dir, *project_dir.parents):
        if (here / ".hg").is_dir():
            return _hg_state(here / ".hg")
    return None


def maybe_tracked(project_dir: Path, rels: list[str]) -> list[str]:
    """Those of ``rels`` (paths relative to ``project_dir``) that git may track: named in the index of the git work
    tree holding ``project_dir``. A modified tracked file makes the tree dirty for setuptools-scm; an untracked one
    does not. Read from ``.git/index`` without starting git; every one is kept where that cannot be told (index
    version 4 compresses paths, Mercurial, an unreadable index): erring that way costs a backend run, never a
    wrong version."""
    found = _git_dir(project_dir)
    if found is None:
        return list(rels)
    git_dir, _common = found
    top = next((here for here in (project_dir, *project_dir.parents) if (here / ".git").exists()), project_dir)
    try:
        index = (git_dir / "index").read_bytes()
    except OSError:
        return []  # no index yet (a fresh `git init`): nothing is tracked
    if index[:4] != b"DIRC" or int.from_bytes(index[4:8], "big") not in (2, 3):
        return list(rels)
    prefix = project_dir.resolve().relative_to(top.resolve()).as_posix()
    out = []
    for rel in rels:
        path = rel if prefix in ("", ".") else f"{prefix}/{rel}"
        if path.encode("utf-8", "surrogateescape") + b"\x00" in index:
            out.append(rel)
    return out
