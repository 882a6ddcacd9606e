"""Load an image straight into a local engine, as ko's ``--local`` and Jib's ``jibDockerBuild`` do.

Docker: the archive is streamed to the Engine API (``POST /images/load``) over the endpoint the docker CLI
would use: ``$DOCKER_HOST``, else the current context (``$DOCKER_CONTEXT`` or ``currentContext`` in
``$DOCKER_CONFIG/config.json``), else ``unix:///var/run/docker.sock``. ``tcp://`` endpoints honour
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` as the CLI does. Podman: ``podman load`` reads the same stream on
stdin (a podman API socket also works as ``DOCKER_HOST``). Nothing is written to disk on the way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Iterable

import pyimage.tools as tools
from pyimage.errors import BuildError, ConfigError
from pyimage.oci.dockerarchive import archive_chunks
from pyimage.oci.model import Image

__all__ = ["Loaded", "DockerEndpoint", "docker_endpoint", "default_engine_output", "load_docker", "load_podman", "docker_image_id", "docker_python_images", "save_docker", "ENGINES"]

ENGINES = ("docker", "podman")
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_TIMEOUT = 600.0  # a torch image is ~1 GB of layers for the engine to unpack


@dataclass(frozen=True)
class Loaded:
    engine: str  # "docker" | "podman"
    endpoint: str  # where it went (socket URL, or "podman")
    reference: str  # name:tag
    image_id: str  # what the engine calls the image
    layers_sent: int  # layer blobs streamed: fewer than the image has when the engine held the rest
    also: tuple[str, ...] = ()  # further names the image was tagged with (-t given more than once)

    def to_json(self) -> dict[str, object]:
        return {"engine": self.engine, "endpoint": self.endpoint, "reference": self.reference, "id": self.image_id, "layers_sent": self.layers_sent, "also_tagged": list(self.also)}


@dataclass(frozen=True)
class DockerEndpoint:
    host: str  # unix:///path or tcp://host:port
    source: str  # how it was found, for messages: "DOCKER_HOST", "context NAME", "default"
    tls_dir: str | None = None  # a directory with ca.pem, cert.pem, key.pem (DOCKER_TLS_VERIFY)


def docker_endpoint(environ: dict[str, str] | None = None) -> DockerEndpoint:
    """The Engine API endpoint the docker CLI would talk to, found the way it finds it."""
    env = dict(os.environ if environ is None else environ)
    config_dir = Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME", "~")).expanduser() / ".docker")
    tls_dir = (env.get("DOCKER_CERT_PATH") or str(config_dir)) if env.get("DOCKER_TLS_VERIFY") else None
    if env.get("DOCKER_HOST"):
        return DockerEndpoint(env["DOCKER_HOST"], "DOCKER_HOST", tls_dir)
    context = env.get("DOCKER_CONTEXT")
    if not context:
        try:
            context = json.loads((config_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            context = None
    if context and context != "default":
        meta = config_dir / "contexts" / "meta" / hashlib.sha256(context.encode()).hexdigest() / "meta.json"
        try:
            host = json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BuildError(f"docker context {context!r}: cannot read its endpoint from {meta} ({exc})", "run `docker context ls`, or set DOCKER_HOST") from exc
        return DockerEndpoint(str(host), f"context {context}", tls_dir)
    return DockerEndpoint(DEFAULT_DOCKER_HOST, "default", tls_dir)


def default_engine_output() -> str:
    """What ``--load`` means here: Docker when its endpoint is configured or its socket exists, else podman when
    it is installed, else Docker (whose error then names the socket it tried)."""
    endpoint = docker_endpoint()
    if endpoint.source != "default" or Path(endpoint.host[len("unix://"):]).exists():
        return "docker-daemon:"
    return "podman:" if shutil.which("podman") else "docker-daemon:"


def _client(endpoint: DockerEndpoint):  # type: ignore[no-untyped-def]
    import httpx

    host = endpoint.host
    timeout = httpx.Timeout(_TIMEOUT, connect=10.0)
    if host.startswith("unix://"):
        return httpx.Client(transport=_unix_transport(host[len("unix://"):]), base_url="http://docker", timeout=timeout)
    if host.startswith("tcp://"):
        if endpoint.tls_dir:
            tls = Path(endpoint.tls_dir)
            import ssl

            ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
            ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
            return httpx.Client(base_url="https://" + host[len("tcp://"):], verify=ctx, timeout=timeout)
        return httpx.Client(base_url="http://" + host[len("tcp://"):], timeout=timeout)
    raise BuildError(
        f"docker endpoint {host} ({endpoint.source}): only unix:// and tcp:// endpoints are supported",
        "forward the engine's socket locally (e.g. `ssh -L /tmp/docker.sock:/var/run/docker.sock HOST`) and set DOCKER_HOST=unix:///tmp/docker.sock",
    )


def _unix_transport(path: str):  # type: ignore[no-untyped-def]
    """httpx's transport to the Engine API socket at ``path``, except that a connect that fails (no engine, a stale
    socket, no permission) closes its socket at once: httpcore 1.0 leaves it to the garbage collector, an unclosed
    socket (ResourceWarning) on every ``pyimage init`` or ``--load`` where no engine listens."""
    import socket

    import httpcore
    import httpx
    from httpcore._backends.sync import SyncStream

    class ClosingBackend(httpcore.SyncBackend):
        def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore[no-untyped-def]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                sock.connect(path)
            except OSError as exc:  # what httpcore raises for it, as it does
                sock.close()
                raise (httpcore.ConnectTimeout if isinstance(exc, socket.timeout) else httpcore.ConnectError)(exc) from exc
            return SyncStream(sock)

    transport = httpx.HTTPTransport(uds=path)
    transport._pool._network_backend = ClosingBackend()  # httpx has no network_backend argument
    return transport


def load_docker(image: Image, reference: str, endpoint: DockerEndpoint | None = None, also: tuple[str, ...] = ()) -> Loaded:
    """Streams ``image`` into a Docker Engine tagged ``reference``; returns the engine's image ID.

    An image the engine holds already (same image ID, under ``reference`` or any other name) is not sent again:
    it is only tagged. Otherwise only the layers above those it shares with an image the engine holds (the
    previous build of the tag, the base, another tag of the app) are sent (a thin archive;
    the classic image store skips layers it has without opening their files). Should the engine refuse it (a
    containerd image store wants every blob), the whole archive is sent instead."""
    import httpx

    endpoint = endpoint or docker_endpoint()
    try:
        with _client(endpoint) as client:
            client.get("/_ping").raise_for_status()
            image_id = image.config_descriptor().digest
            current = client.get(f"/images/{reference}/json")
            if current.status_code == 200 and current.json().get("Id") == image_id:
                _tag_docker(client, reference, also)
                return Loaded("docker", endpoint.host, reference, image_id, 0, also)  # it is there already
            same = client.get(f"/images/{image_id}/json")
            if same.status_code == 200 and same.json().get("Id") == image_id:  # the same image under another name
                _tag_docker(client, image_id, (reference, *also))
                return Loaded("docker", endpoint.host, reference, image_id, 0, also)
            held = _layers_held(client, image, reference)
            if held:
                try:
                    _post_load(client, endpoint, archive_chunks(image, reference, omit=held))
                except BuildError:
                    held = frozenset()
            if not held:
                _post_load(client, endpoint, archive_chunks(image, reference))
            info = client.get(f"/images/{reference}/json")
            info.raise_for_status()
            image_id = str(info.json().get("Id", ""))
            _tag_docker(client, reference, also)
    except httpx.TransportError as exc:
        raise BuildError(
            f"cannot reach the Docker Engine at {endpoint.host} ({endpoint.source}): {exc}",
            "start Docker, or point DOCKER_HOST (or `docker context use`) at a running engine; use -o oci:DIR or -o docker-archive:FILE to write the image instead",
        ) from exc
    except httpx.HTTPStatusError as exc:
        raise BuildError(f"docker ({endpoint.host}) answered {exc.response.status_code}: {_message(exc.response.content)}", "check that the engine runs and that you may use its socket") from exc
    return Loaded("docker", endpoint.host, reference, image_id, len({layer.digest for layer in image.layers} - held), also)


def _tag_docker(client: object, reference: str, also: tuple[str, ...]) -> None:
    """``docker tag REFERENCE NAME:TAG`` for each further name (``POST /images/{name}/tag``)."""
    for name in also:
        repo, _, tag = name.rpartition(":")
        client.post(f"/images/{reference}/tag", params={"repo": repo, "tag": tag}).raise_for_status()  # type: ignore[attr-defined]


def _engine_call(endpoint: DockerEndpoint, what: str):  # type: ignore[no-untyped-def]
    """The Engine API errors of reading an image, in the user's terms."""
    import httpx

    @contextlib.contextmanager
    def call():  # type: ignore[no-untyped-def]
        try:
            with _client(endpoint) as client:
                yield client
        except httpx.TransportError as exc:
            raise BuildError(
                f"{what}: cannot reach the Docker Engine at {endpoint.host} ({endpoint.source}): {exc}",
                "start Docker, or point DOCKER_HOST (or `docker context use`) at a running engine",
            ) from exc

    return call()


def docker_image_id(name: str, endpoint: DockerEndpoint | None = None) -> str:
    """The image ID (its config's digest) the engine holds under ``name``; an error naming the engine when none."""
    endpoint = endpoint or docker_endpoint()
    with _engine_call(endpoint, f"base docker-daemon:{name}") as client:
        info = client.get(f"/images/{name}/json")
    if info.status_code == 404:
        raise ConfigError(f"base docker-daemon:{name}: the Docker Engine at {endpoint.host} has no image {name}", f"`docker pull {name}` (or `docker load`) first, or pick one `docker images` lists")
    if info.status_code != 200:
        raise BuildError(f"base docker-daemon:{name}: docker ({endpoint.host}) answered {info.status_code}: {_message(info.content)}", "check that the engine runs and that you may use its socket")
    image_id = str(info.json().get("Id", ""))
    if not image_id.startswith("sha256:"):
        raise BuildError(f"base docker-daemon:{name}: the engine gave no image ID", "update Docker")
    return image_id


def docker_python_images(endpoint: DockerEndpoint | None = None) -> list[str]:
    """``python`` images the local engine holds (``python:3.12-slim``, ``REGISTRY/library/python:TAG``), newest
    first; empty when there is no engine to ask. For ``pyimage init`` on a machine without a registry."""
    import httpx

    endpoint = endpoint or docker_endpoint()
    try:
        with _client(endpoint) as client:
            reply = client.get("/images/json", timeout=5.0)
    except (httpx.HTTPError, BuildError, OSError):
        return []
    if reply.status_code != 200 or not isinstance(reply.json(), list):
        return []
    found = []
    for image in sorted(reply.json(), key=lambda i: -int(i.get("Created") or 0) if isinstance(i, dict) else 0):
        for tag in (image.get("RepoTags") or []) if isinstance(image, dict) else []:
            repository = str(tag).rpartition(":")[0]
            if repository.rsplit("/", 1)[-1] == "python" and tag not in found:
                found.append(str(tag))
    return found


def save_docker(name: str, dest: BinaryIO, endpoint: DockerEndpoint | None = None) -> None:
    """Writes ``docker save NAME`` (the Engine API's ``GET /images/NAME/get``) to ``dest``; read as untrusted."""
    endpoint = endpoint or docker_endpoint()
    with _engine_call(endpoint, f"base docker-daemon:{name}") as client:
        with client.stream("GET", f"/images/{name}/get") as reply:
            if reply.status_code != 200:
                raise BuildError(f"base docker-daemon:{name}: docker ({endpoint.host}) answered {reply.status_code}: {_message(reply.read())}", "check the image name (`docker images`)")
            for chunk in reply.iter_bytes(1 << 20):
                dest.write(chunk)


_CANDIDATES = 100  # images asked for their layers when looking for the ones a new image shares (newest first)


def _layers_held(client: object, image: Image, reference: str) -> frozenset[str]:
    """Digests of the layers the engine already holds as the bottom of some image (same diff_ids in the same
    order, so the same layer chain), when its store is the classic one: the image now under ``reference``
    first (a rebuild), then the engine's newest images (the base pulled or loaded there, another tag of this
    app). The candidates are bounded, so an engine holding thousands of images costs a bounded number of
    local calls; a miss only means more layers are sent."""
    info = client.get("/info")  # type: ignore[attr-defined]
    if info.status_code != 200 or "io.containerd.snapshotter" in json.dumps(info.json().get("DriverStatus")):
        return frozenset()
    ours = [layer.diff_id for layer in image.layers]
    names = [reference]
    listed = client.get("/images/json")  # type: ignore[attr-defined]
    if listed.status_code == 200 and isinstance(listed.json(), list):
        newest = sorted((i for i in listed.json() if isinstance(i, dict) and i.get("Id")), key=lambda i: -int(i.get("Created") or 0))
        names += [str(i["Id"]) for i in newest[:_CANDIDATES]]
    shared = 0
    for name in dict.fromkeys(names):
        current = client.get(f"/images/{name}/json")  # type: ignore[attr-defined]
        if current.status_code != 200:
            continue
        theirs = (current.json().get("RootFS") or {}).get("Layers") or []
        n = 0
        while n < min(len(theirs), len(ours)) and theirs[n] == ours[n]:
            n += 1
        shared = max(shared, n)
        if shared == len(ours):
            break
    needed = {layer.digest for layer in image.layers[shared:]}
    return frozenset(layer.digest for layer in image.layers[:shared] if layer.digest not in needed)


def _post_load(client: object, endpoint: DockerEndpoint, chunks: Iterable[bytes]) -> None:
    with client.stream("POST", "/images/load", params={"quiet": "1"}, content=chunks, headers={"Content-Type": "application/x-tar"}) as reply:  # type: ignore[attr-defined]
        body = b"".join(reply.iter_bytes())
        if reply.status_code >= 400:
            raise BuildError(f"docker ({endpoint.host}) refused the image: {_message(body)}", "see the engine's log; `pyimage inspect --check` checks the image as engines read it")
    _raise_stream_error(body, endpoint)


def _message(body: bytes) -> str:
    try:
        value = json.loads(body)
        return str(value.get("message") or value.get("error") or value)[:500]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()[:500]


def _raise_stream_error(body: bytes, endpoint: DockerEndpoint) -> None:
    """The load reply is a stream of JSON messages; an ``error`` in any of them means the load failed."""
    for line in body.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise BuildError(
                f"docker ({endpoint.host}) refused the image: {str(message['error'])[:500]}",
                "run `pyimage inspect --check` on an oci: or docker-archive: output of the same build to see what is wrong",
            )


def load_podman(image: Image, reference: str, podman: str | None = None, also: tuple[str, ...] = ()) -> Loaded:
    """Feeds ``image`` to ``podman load`` on stdin and tags it ``reference`` (and each of ``also``). An image podman
    holds already (its ID is the config's digest, under any name) is only tagged: nothing is streamed."""
    exe = podman or shutil.which("podman")
    if exe is None:
        raise BuildError("podman is not on PATH", "install podman, or load into Docker with --load / -o docker-daemon:NAME:TAG")
    image_id = image.config_descriptor().digest.removeprefix("sha256:")
    held = tools.run([exe, "image", "inspect", "--format", "{{.Id}}", image_id], tool="podman", doing=f"looking for image {image_id[:12]} in podman")
    if held.ok and held.stdout.strip() == image_id:
        for name in (reference, *also):
            tagged = tools.run([exe, "tag", image_id, name], tool="podman", doing=f"tagging {image_id[:12]} as {name}")
            if not tagged.ok:
                raise tagged.error("run `podman images` to see what it holds", f"podman tag {image_id[:12]} {name} failed")
        return Loaded("podman", "podman", reference, image_id, 0, also)
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: podman's progress can never block our writes
        proc = subprocess.Popen([exe, "load"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            _feed(proc.stdin, archive_chunks(image, reference))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # podman stopped reading: its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        err.seek(0)
        message = err.read()
    if code != 0:
        raise BuildError(f"podman load failed: {_last_line(message)}", "see `podman load` on the docker-archive output of the same build")
    done = tools.run([exe, "image", "inspect", "--format", "{{.Id}}", reference], tool="podman", doing=f"finding {reference} in podman")
    if not done.ok:
        raise done.error("run `podman images` to see what was loaded", f"podman loaded the image but cannot find {reference}")
    for name in also:
        tagged = tools.run([exe, "tag", reference, name], tool="podman", doing=f"tagging {reference} as {name}")
        if not tagged.ok:
            raise tagged.error("run `podman images` to see what was loaded", f"podman tag {reference} {name} failed")
    return Loaded("podman", "podman", reference, done.stdout.strip(), len({layer.digest for layer in image.layers}), also)


def _feed(pipe: IO[bytes], chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        pipe.write(chunk)


def _last_line(err: bytes) -> str:
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no message)"
