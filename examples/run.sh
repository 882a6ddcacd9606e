#!/usr/bin/env bash
# Build an example into an OCI image and run it with runc — no Docker, no Docker Hub.
#   examples/run.sh hello-cli [ARGS...]
# Needs root and Debian's mmdebstrap, umoci and runc (apt-get install mmdebstrap umoci runc).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:?usage: examples/run.sh EXAMPLE [ARGS...]}"; shift
rootfs="$here/../.cache/bookworm-python3.tar"   # the examples' [tool.pyimage] base points here
if [ ! -f "$rootfs" ]; then
    echo "==> making a Debian bookworm base with python3 (mmdebstrap, ~30 s, once)"
    mkdir -p "$(dirname "$rootfs")"
    SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --format=tar --variant=minbase --include=python3 bookworm "$rootfs.tmp" http://deb.debian.org/debian
    mv "$rootfs.tmp" "$rootfs"
fi
layout="$(mktemp -d)/image"
echo "==> pyimage build -C examples/$name -o oci:$layout:latest"
pyimage build -C "$here/$name" -o "oci:$layout:latest"
bundle="$(mktemp -d)/bundle"; mkdir -p "$bundle"
umoci raw unpack --image "$layout:latest" "$bundle/rootfs" >/dev/null
umoci raw runtime-config --image "$layout:latest" --rootfs "$bundle/rootfs" "$bundle/config.json"
python3 - "$bundle/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:]
config = json.load(open(path))
config["linux"].pop("resources", None)  # no cgroup controllers on some machines
config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
config["process"]["terminal"] = False
if args:
    config["process"]["args"] = config["process"]["args"][:1] + args
json.dump(config, open(path, "w"))
PY
echo "==> runc run"
id="pyimage-example-$$"
trap 'runc delete --force "$id" >/dev/null 2>&1 || true; rm -rf "$(dirname "$bundle")" "$(dirname "$layout")"' EXIT
runc run --bundle "$bundle" "$id"
