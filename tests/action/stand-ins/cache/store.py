"""The stand-in cache's store: ``$ACT_CACHE_STORE/<sha256(key)>/{key,data/}``, written to a temp name and renamed.

Restore takes the exact key, else the newest entry whose key starts with one of the restore keys (in order),
as actions/cache does; save never replaces an entry. Each run prints one line the tests read from act's log.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

store = Path(os.environ["ACT_CACHE_STORE"])
path = Path(os.path.expanduser(os.environ["CACHE_PATH"]))
key = os.environ["CACHE_KEY"]


def entry(name: str) -> Path:
    return store / hashlib.sha256(name.encode()).hexdigest()[:32]


def output(name: str, value: str) -> None:
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
        out.write(f"{name}={value}\n")


if sys.argv[1] == "restore":
    matched = key if (entry(key) / "key").is_file() else ""
    for prefix in [] if matched else [p.strip() for p in os.environ.get("CACHE_RESTORE_KEYS", "").splitlines() if p.strip()]:
        found = [e for e in store.glob("*") if (e / "key").is_file() and (e / "key").read_text().startswith(prefix)]
        if found:
            matched = (max(found, key=lambda e: (e / "key").stat().st_mtime) / "key").read_text()
            break
    if matched:  # over whatever is there, as actions/cache's tar extraction does
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--remove-destination", f"{entry(matched) / 'data'}/.", str(path)], check=True)
    print(f"stand-in cache: restore {key!r}: {'hit' if matched == key else 'matched ' + repr(matched) if matched else 'miss'}")
    output("cache-hit", str(matched == key).lower())
    output("cache-primary-key", key)
    output("cache-matched-key", matched)
else:
    target = entry(key)
    if target.exists():
        print(f"stand-in cache: save {key!r}: entry exists, not replaced")
        sys.exit(0)
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f"tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    subprocess.run(["cp", "-a", str(path), str(tmp / "data")], check=True)
    (tmp / "key").write_text(key)
    tmp.rename(target)
    size = sum(f.stat().st_size for f in (target / "data").rglob("*") if f.is_file())
    print(f"stand-in cache: save {key!r}: {size} bytes")
