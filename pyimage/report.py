"""The documents a build and a plan produce: what ``--json`` prints and ``console`` renders for people.

Data only (dicts of JSON values, no text for people); the ``"version"`` field is added where the document is
printed (``console.print_json``).
"""

from __future__ import annotations

from typing import Any, Sequence

from pyimage.oci.model import MEDIA_OCI_INDEX, Image
from pyimage.pipeline import BuildResult, Plan
from pyimage.runconfig import run_settings

__all__ = ["build_document", "plan_document"]


def build_document(result: BuildResult) -> dict[str, Any]:
    """What ``pyimage build --json`` prints (``console.show_build`` renders the result for people). With several
    platforms, ``image`` is the index (its digest is what the tag names) and ``platforms`` lists each platform's
    manifest and layers; ``layers`` are the first one's."""
    image: dict[str, Any] = {"digest": result.image.digest, "config_digest": result.image.config_descriptor().digest, "platform": str(result.image.platform), "size": result.image.size}
    if result.index is not None:
        image = {"digest": result.index.digest, "platform": ",".join(str(i.platform) for i in result.index.images), "size": result.index.size, "media_type": MEDIA_OCI_INDEX}
    out: dict[str, Any] = {
        "image": image,
        "base": result.prepared.base_source,
        "layers": _layers_json(result.image),
        "outputs": list(result.outputs),
        "pushed": list(result.pushed),
        "loaded": [item.to_json() for item in result.loaded],
        "notes": list(result.notes),
    }
    if result.platforms:
        out["platforms"] = [
            {"platform": str(image.platform), "digest": image.digest, "base": prep.base_source, "layers": _layers_json(image)}
            for prep, image in result.platforms
        ]
    return out


def _layers_json(image: Image) -> list[dict[str, Any]]:
    return [
        {
            "name": layer.name,
            "digest": layer.digest,
            "diff_id": layer.diff_id,
            "size": layer.size,
            "uncompressed_size": layer.uncompressed_size,
            "packages": list(layer.packages),
            "cached": layer.cached,
            "remote": layer.remote,
        }
        for layer in image.layers
    ]


def plan_document(plans: Sequence[Plan]) -> dict[str, Any]:
    """What ``pyimage plan`` shows (``--json`` as it is; ``console.show_plan`` renders the same document): per
    platform the target, every layer with its packages and why each is there, the run config and notes; with
    several platforms, the wheel layers that are one blob for all of them."""
    docs = [
        {
            "target": one.target.describe(),
            "platform": str(one.target.platform),
            "layers": _plan_layers(one),
            "config": run_settings(one.config, one.console_scripts, one.paths, one.user, one.workdir_in_image),
            "notes": list(one.notes),
        }
        for one in plans
    ]
    if len(plans) == 1:
        return docs[0]
    return {"platforms": docs, "shared": _shared_layers(plans), "notes": sorted({n for doc in docs for n in doc["notes"]})}


def _plan_layers(prep: Plan) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = [
        {"name": "base", "count": len(prep.base.layers), "source": prep.base_source},
        {"name": "interpreter", "python": prep.interpreter.executable, "venv": prep.config.venv},
    ]
    for spec in prep.layer_plan.layers:
        reasons = dict(spec.reasons)
        packages = [{"name": w.name, "version": w.version, "installed_size": w.installed_size, "reason": reasons[w.name]} for w in spec.wheels]
        layers.append({"name": spec.name, "installed_size": spec.installed_size, "packages": packages})
    if prep.app_files:
        where = prep.workdir_in_image
        layers.append({"name": "app", "installed_size": sum(f.size for f in prep.app_files), "why": f"{len(prep.app_files)} file(s) of the project at {where} (not a package: no wheel)", "workdir": where, "file_count": len(prep.app_files)})
    user, writable = prep.user, list(prep.config.writable)
    if prep.has_runtime_layer:
        made = f"user {user.name} ({user.uid}:{user.gid}) created, home {user.home}" if user is not None and user.created else ""
        why = "; ".join(p for p in (made, f"writable {', '.join(writable)}" if writable else "") if p)
        layers.append({"name": "runtime", "installed_size": 0, "why": why, "writable": writable})
    if prep.files:
        layers.append({"name": "files", "installed_size": sum(f.size for f in prep.files), "why": f"{len(prep.files)} project file(s) from `files`", "files": ["/" + f.dest for f in prep.files]})
    return layers


def _shared_layers(plans: Sequence[Plan]) -> list[str]:
    """Wheel layers every platform's plan fills with the very same wheels (so the same blob)."""

    def wheels(prep: Plan) -> dict[str, tuple[str, ...]]:
        return {spec.name: tuple(w.sha256 for w in spec.wheels) for spec in prep.layer_plan.layers}

    first, rest = wheels(plans[0]), [wheels(p) for p in plans[1:]]
    return [name for name, shas in first.items() if all(other.get(name) == shas for other in rest)]
