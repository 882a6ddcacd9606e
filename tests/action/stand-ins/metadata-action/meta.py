"""docker/metadata-action's outputs for the rules pyimage's workflow template uses (see action.yml beside this)."""

from __future__ import annotations

import json
import os
import re
import secrets

env = os.environ
event = json.loads(open(env["GITHUB_EVENT_PATH"], encoding="utf-8").read() or "{}")
ref, sha = env.get("GITHUB_REF", ""), env.get("GITHUB_SHA", "")
names: list[str] = []
for rule in filter(None, (line.strip() for line in env.get("META_TAGS", "").splitlines())):
    attrs = dict(part.split("=", 1) for part in rule.split(","))
    kind = attrs.get("type")
    if kind == "sha":
        names.append("sha-" + sha[:7])
    elif kind == "ref" and attrs.get("event") == "branch" and ref.startswith("refs/heads/"):
        names.append(re.sub(r"[^A-Za-z0-9_.-]", "-", ref[len("refs/heads/"):]))
    elif kind == "ref" and attrs.get("event") == "pr" and env.get("GITHUB_EVENT_NAME") == "pull_request":
        names.append(f"pr-{event.get('number') or event['pull_request']['number']}")
    elif kind == "semver" and re.fullmatch(r"refs/tags/v?\d+\.\d+\.\d+", ref):
        major, minor, patch = ref.rsplit("/", 1)[1].lstrip("v").split(".")
        names.append(attrs["pattern"].replace("{{version}}", f"{major}.{minor}.{patch}").replace("{{major}}", major).replace("{{minor}}", minor))
images = [line.strip() for line in env["META_IMAGES"].splitlines() if line.strip()]
oci = {
    "org.opencontainers.image.source": f"https://github.com/{env.get('META_REPOSITORY', '')}",
    "org.opencontainers.image.revision": sha,
    "org.opencontainers.image.version": names[0] if names else "",
}
outputs = {
    "tags": "\n".join(f"{image}:{name}" for image in images for name in names),
    "labels": "\n".join(f"{k}={v}" for k, v in oci.items()),
    "annotations": "\n".join(f"manifest:{k}={v}" for k, v in oci.items()),
}
with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
    for name, value in outputs.items():
        delim = "EOF_" + secrets.token_hex(8)
        out.write(f"{name}<<{delim}\n{value}\n{delim}\n")
print("stand-in metadata: tags " + ", ".join(outputs["tags"].splitlines()))
