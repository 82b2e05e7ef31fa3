"""Stage fingerprints: what a stage's result depends on, so that a re-run skips only what is truly unchanged.

A stage's fingerprint (docs/ARCHITECTURE.md, Stages and pipelines) covers its
name and code version, its parameters, the job seed, the fingerprints of the
artifacts it reads and the *content* of every user file it reads:

* the job's ``data:`` folder or file, when the stage is wired to it;
* every parameter declared as an input path: typed :data:`InputPath`
  (``checkpoint: InputPath | None = None``), or a field made with
  :func:`vision3d.pipeline.config.input_path`. The config loader resolves such a
  path against the job file and checks it exists; the runner hashes what it
  points to.

So a checkpoint retrained at the same path, or a data folder whose files were
replaced, makes the stage run again. Content hashes (SHA-256) are cached per run
directory in ``.digests.json`` keyed by path, size, mtime, ctime and inode, so a
large dataset is read once, not on every run. A file modified within
:data:`RACY_SECONDS` of being hashed is hashed again next time, because a
same-size rewrite inside the file system's timestamp resolution would leave the
key unchanged (git's "racy clean" rule).
"""

from __future__ import annotations

import hashlib
import json
import time
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["DigestCache", "InputPath", "input_path_fields", "is_input_path", "stage_fingerprint"]


class _InputPathMarker:
    """Annotation metadata marking a parameter as a user file/folder the stage reads."""

    def __repr__(self) -> str:
        return "InputPath"


INPUT_PATH = _InputPathMarker()
#: A path parameter the stage reads: resolved against the job config, checked to exist, content-hashed.
InputPath = Annotated[str, INPUT_PATH]

DIGEST_CACHE = ".digests.json"
#: Files modified this recently before hashing are not trusted from the cache next time.
RACY_SECONDS = 2.0
_CHUNK = 1 << 20


def _has_marker(annotation: Any) -> bool:
    if annotation is None:
        return False
    if INPUT_PATH in getattr(annotation, "__metadata__", ()):
        return True
    return any(_has_marker(a) for a in typing.get_args(annotation))


def is_input_path(field: FieldInfo) -> bool:
    """True when a pydantic field is declared as an input path (:data:`InputPath` or ``input_path()``)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("vision3d_path") == "input" or INPUT_PATH in field.metadata or _has_marker(field.annotation)


def input_path_fields(model: type[BaseModel]) -> list[str]:
    """Names of the input-path fields of a parameter schema, in declaration order."""
    return [name for name, f in model.model_fields.items() if is_input_path(f)]


class DigestCache:
    """SHA-256 of file contents, cached in a JSON file keyed by (path, size, mtime, ctime, inode).

    Args:
        path: the cache file (``<run dir>/.digests.json``), or None for no persistence.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except (OSError, ValueError):
                pass  # a missing or damaged cache only costs re-hashing

    def file_digest(self, f: Path) -> str:
        """Hex SHA-256 of the content of file ``f``."""
        st = f.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        name = str(f.resolve())
        hit = self._entries.get(name)
        if hit is not None and hit.get("key") == key and hit.get("trusted"):
            return hit["sha256"]
        started = time.time_ns()
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        self._entries[name] = {"key": key, "sha256": digest,
                               "trusted": newest < started - int(RACY_SECONDS * 1e9)}
        self._dirty = True
        return digest

    def path_digest(self, p: Path) -> str:
        """Content digest of a file, or of a folder (relative names and contents of every file under it)."""
        p = Path(p)
        if p.is_file():
            return self.file_digest(p)
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{self.file_digest(f)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        """Write the cache (atomically) if anything changed; failures only cost re-hashing later."""
        if self.path is None or not self._dirty:
            return
        from vision3d.io.atomic import atomic_write_json

        try:
            atomic_write_json(self.path, {"vision3d": "file digests v1", "files": self._entries}, indent=None,
                              fsync=False)
            self._dirty = False
        except Exception:  # noqa: BLE001 - the cache is an optimisation, never a reason to fail a run
            pass


def stage_fingerprint(stage_name: str, version: int, params: BaseModel, seed: int, input_fps: dict[str, str],
                      digests: DigestCache) -> str:
    """The 16-hex-digit fingerprint of one stage run (see the module docstring).

    Args:
        stage_name, version: the registered stage and its code version.
        params: the validated parameters (input paths already resolved to absolute paths).
        seed: the job seed.
        input_fps: fingerprint of each artifact the stage reads, by input name.
        digests: content-digest cache for the files named by input-path parameters.
    """
    files = {}
    for name in input_path_fields(type(params)):
        value = getattr(params, name)
        if value not in (None, "") and Path(value).exists():
            files[name] = digests.path_digest(Path(value))
    payload = {
        "stage": stage_name,
        "version": version,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "inputs": input_fps,
        "files": files,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
