"""The layer plan: which wheel goes into which layer, and why. Pure: no I/O, same inputs, same plan.

Lowest first: ``interpreter``; one ``heavy:<group>`` per heavy group (user-named groups in config order,
then threshold groups by name); ``site-packages`` for everything else; ``workspace`` for first-party packages
built from local paths (workspace members, path dependencies: they change more often than third-party code, less
often than the app); ``app`` for the project's own wheel.
The base image's layers sit below all of them and count toward ``max_layers``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Sequence

from pyimage.console import human_size
from pyimage.errors import ConfigError
from pyimage.wheels import Wheel

__all__ = ["HeavyGroup", "LayerSpec", "LayerPlan", "plan_layers", "MAX_LAYERS_DEFAULT", "normalize_pattern"]

MAX_LAYERS_DEFAULT = 64  # overlay-based runtimes refuse images over ~127 layers; leave room for the base


def normalize_pattern(pattern: str) -> str:
    """A PEP 503-normalized package name or glob (``Nvidia_CUDA*`` -> ``nvidia-cuda*``)."""
    return re.sub(r"[-_.]+", "-", pattern.strip()).lower()


@dataclass(frozen=True)
class HeavyGroup:
    """User-named heavy packages that share one layer: ``torch``, ``nvidia-*``, or a named set."""

    name: str
    patterns: tuple[str, ...]

    def matches(self, wheel_name: str) -> bool:
        return any(fnmatch.fnmatchcase(wheel_name, normalize_pattern(p)) for p in self.patterns)


@dataclass(frozen=True)
class LayerSpec:
    """What goes into one layer. ``reasons`` maps each wheel's name to why it is in this layer."""

    name: str
    kind: str  # "heavy" | "site-packages" | "workspace" | "app"
    wheels: tuple[Wheel, ...]
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def installed_size(self) -> int:
        return sum(w.installed_size for w in self.wheels)

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{w.name}=={w.version}" for w in self.wheels)


@dataclass(frozen=True)
class LayerPlan:
    layers: tuple[LayerSpec, ...]
    notes: tuple[str, ...] = field(default=())


def plan_layers(
    wheels: Sequence[Wheel],
    app: Wheel | None,
    heavy: Sequence[HeavyGroup] = (),
    threshold: int | None = None,
    max_layers: int = MAX_LAYERS_DEFAULT,
    fixed_layers: int = 1,
    workspace: Sequence[tuple[Wheel, str]] = (),
) -> LayerPlan:
    """Plans the wheel layers above ``fixed_layers`` (base layers + interpreter).

    A heavy pattern that matches no wheel is a ConfigError (a typo must not silently do nothing). When the
    total would exceed ``max_layers``, the smallest heavy groups merge into ``site-packages``, and a note
    says so. ``workspace`` holds the local packages' wheels, each with where it was built from.
    """
    remaining = {w.name: w for w in sorted(wheels, key=lambda w: w.name) if app is None or w.name != app.name}
    groups: list[tuple[str, list[Wheel], list[tuple[str, str]]]] = []
    notes: list[str] = []
    # An exact name claims its wheel before any glob does, whatever the group order: `heavy = ["nvidia-*",
    # "nvidia-cudnn-cu12"]` gives cudnn its own layer instead of an error that it "matches nothing".
    claimed: dict[str, str] = {}
    for group in heavy:
        for pattern in group.patterns:
            name = normalize_pattern(pattern)
            if not any(c in name for c in "*?[") and name in remaining and name not in claimed:
                claimed[name] = group.name
    for group in heavy:
        matching = [w for w in wheels if group.matches(w.name) and (app is None or w.name != app.name)]
        members = [w for w in matching if w.name in remaining and claimed.get(w.name, group.name) == group.name]
        # every exact name must match, not just one of the group's patterns: a typo inside a named group is not
        # ignored (a glob may match nothing on some platforms: `nvidia-*` on a CPU-only set)
        unmatched = [
            p for p in group.patterns
            if not any(c in p for c in "*?[") and not any(HeavyGroup(group.name, (p,)).matches(w.name) for w in wheels if app is None or w.name != app.name)
        ]
        if unmatched or not matching:
            unmatched = unmatched or list(group.patterns)
            known = ", ".join(sorted(w.name for w in wheels)) or "none"
            raise ConfigError(
                f"heavy group {group.name!r}: {', '.join(unmatched)} matches no package in the wheel set",
                f"check the spelling in [tool.pyimage] heavy; the wheel set has: {known}",
            )
        if not members:
            notes.append(f"heavy group {group.name!r} is empty: earlier groups took {', '.join(w.name for w in matching)}")
            continue
        for w in members:
            del remaining[w.name]
        why = f"named heavy in group {group.name!r}" if group.patterns != (group.name,) else "named heavy"
        groups.append((group.name, members, [(w.name, why) for w in members]))
    if threshold is not None:
        taken = {g[0] for g in groups}
        for w in [w for w in remaining.values() if w.installed_size >= threshold]:
            del remaining[w.name]
            why = f"installs {human_size(w.installed_size)}, at or over heavy-threshold {human_size(threshold)}"
            name = w.name if w.name not in taken else f"{w.name}-by-size"  # a user group already has the name
            taken.add(name)
            groups.append((name, [w], [(w.name, why)]))

    rest = list(remaining.values())
    rest_reasons = [(w.name, "dependency") for w in rest]

    def count() -> int:
        return fixed_layers + len(groups) + (1 if rest else 0) + (1 if workspace else 0) + (1 if app else 0)

    if count() > max_layers:
        by_size = sorted(groups, key=lambda g: (sum(w.installed_size for w in g[1]), g[0]))
        while count() > max_layers and by_size:
            smallest = by_size.pop(0)
            groups.remove(smallest)
            rest.extend(smallest[1])
            rest_reasons.extend((n, f"heavy:{smallest[0]} merged here to stay within max-layers={max_layers}") for n, _ in smallest[2])
            notes.append(f"merged heavy:{smallest[0]} into site-packages to stay within max-layers={max_layers}")
        if count() > max_layers:
            raise ConfigError(
                f"max-layers={max_layers} is below the {count()} layers this image needs "
                f"({fixed_layers} from the base and interpreter)",
                "raise max-layers, or use a base image with fewer layers",
            )

    layers = [
        LayerSpec(f"heavy:{name}", "heavy", tuple(sorted(members, key=lambda w: w.name)), tuple(sorted(reasons)))
        for name, members, reasons in groups
    ]
    if rest:
        rest.sort(key=lambda w: w.name)
        layers.append(LayerSpec("site-packages", "site-packages", tuple(rest), tuple(sorted(rest_reasons))))
    if workspace:
        local = sorted(workspace, key=lambda item: item[0].name)
        layers.append(LayerSpec("workspace", "workspace", tuple(w for w, _ in local), tuple(sorted((w.name, why) for w, why in local))))
    if app is not None:
        layers.append(LayerSpec("app", "app", (app,), ((app.name, "the project's own wheel"),)))
    return LayerPlan(tuple(layers), tuple(notes))
