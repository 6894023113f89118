"""Reproducible image layers: a directory tree as a gzipped tar, byte for byte the same for the
same files.

What makes it reproducible: entries in sorted order (a directory, then its children sorted by
name); every mtime fixed (0, or `SOURCE_DATE_EPOCH`); uid and gid 0 with no user or group name;
modes normalised (0755 for directories and for files with any execute bit, 0644 for other
files, 0777 for symbolic links); no device, socket or fifo entries; a gzip header with mtime 0,
no file name and a fixed compression level. (The compressed bytes also depend on the zlib
version: the same machine image gives the same bytes.)

Left out: `.git`, `__pycache__`, `*.pyc`, `.venv`, and the patterns of `.skylaneignore` and
`.dockerignore` at the top of the tree. Pattern lines: `#` starts a comment; a pattern with no
`/` (other than a trailing one) matches a name at any depth (`*.log`, `build/`), one with a `/`
is matched from the top of the tree (`docs/*.md`, `/dist`); `*` and `?` do not cross `/`, `**`
does; a trailing `/` matches directories only; `!pattern` takes an earlier match back (the last
matching line wins). A left-out directory is not entered, so nothing below it can be taken back.

The tree is placed under a target path in the image (`/opt/skylane/project`): the tar holds
`opt/`, `opt/skylane/`, `opt/skylane/project/` and then the tree below it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from skylane.errors import InvalidInput
from skylane.images.registry import OCI_LAYER_GZIP

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES: tuple[str, ...] = (".git", "__pycache__", "*.pyc", ".venv")
IGNORE_FILES: tuple[str, ...] = (".skylaneignore", ".dockerignore")
COMPRESS_LEVEL = 6
# Layers up to this size stay in memory; larger ones are spooled to a temporary file.
SPOOL_LIMIT = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def source_date_epoch(default: int = 0) -> int:
    """`SOURCE_DATE_EPOCH` from the environment (seconds since 1970), else `default`."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise InvalidInput(
            f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}",
            field="SOURCE_DATE_EPOCH",
        ) from None
    if seconds < 0:
        raise InvalidInput("SOURCE_DATE_EPOCH must not be negative", field="SOURCE_DATE_EPOCH")
    return seconds


def normalize_image_path(path: str, *, field: str = "target") -> str:
    """An absolute POSIX path in the image, normalised (`/opt/skylane/project`)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInput(f"{path!r} must be an absolute path in the image", field=field)
    if any(part == ".." for part in path.split("/")):
        raise InvalidInput(f"{path!r} must not contain '..'", field=field)
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if normalized == "/":
        raise InvalidInput("the image root '/' cannot be a target path", field=field)
    return normalized


# --- ignore patterns --------------------------------------------------------------------


def _glob_to_regex(glob: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    negated: bool
    directories_only: bool


class IgnoreRules:
    """Which relative paths of a tree to leave out (see the module docstring for the syntax)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.rules: list[IgnoreRule] = []
        for line in patterns:
            self.add(line)

    def add(self, line: str) -> None:
        text = line.strip()
        if not text or text.startswith("#"):
            return
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip()
        directories_only = text.endswith("/")
        text = text.rstrip("/")
        if text.startswith("./"):
            text = text[2:]
        if not text:
            return
        anchored = "/" in text
        text = text.lstrip("/")
        prefix = "" if anchored else "(?:.*/)?"
        regex = re.compile(f"^{prefix}{_glob_to_regex(text)}$", re.DOTALL)
        self.rules.append(IgnoreRule(line.strip(), regex, negated, directories_only))

    @classmethod
    def for_tree(
        cls,
        root: Path,
        ignore_files: Sequence[str] = IGNORE_FILES,
        excludes: Sequence[str] = DEFAULT_EXCLUDES,
    ) -> IgnoreRules:
        """The default `excludes`, then the lines of each of `ignore_files` found in `root`."""
        rules = cls(excludes)
        for name in ignore_files:
            path = root / name
            if path.is_file():
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    rules.add(line)
        return rules

    def ignored(self, relative: str, *, is_dir: bool) -> bool:
        """Whether the path `relative` (POSIX, from the top of the tree) is left out."""
        result = False
        for rule in self.rules:
            if rule.directories_only and not is_dir:
                continue
            if rule.regex.match(relative):
                result = not rule.negated
        return result


# --- the layer ---------------------------------------------------------------------------


@dataclass
class Layer:
    """A built layer: `digest` of the compressed bytes (what the registry stores), `diff_id` of
    the uncompressed tar (what the image config lists), `size` in compressed bytes. The bytes
    are in `data`, or, for a large layer, in the file `path` (deleted by `close()` when it is a
    temporary file)."""

    digest: str
    diff_id: str
    size: int
    media_type: str = OCI_LAYER_GZIP
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    entries: list[str] = field(default_factory=list, repr=False)
    temporary: bool = field(default=False, repr=False)

    @property
    def source(self) -> bytes | Path:
        """What to upload: the bytes, or the file holding them."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path or "").read_bytes()

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")

    def save(self, path: Path) -> None:
        """Write the compressed bytes to `path` and a `path.json` beside it with the digests,
        for `Layer.load`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with self.open() as source, open(partial, "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
        meta = {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "size": self.size,
            "media_type": self.media_type,
            "entries": self.entries,
        }
        Path(str(path) + ".json").write_text(json.dumps(meta, sort_keys=True))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> Layer | None:
        """A layer saved by `save`, or None when it is not there or does not match its
        digests (a damaged cache entry is ignored)."""
        meta_path = Path(str(path) + ".json")
        try:
            meta = json.loads(meta_path.read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        if size != meta.get("size"):
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != meta.get("digest"):
            return None
        data = path.read_bytes() if size <= SPOOL_LIMIT else None
        return cls(
            digest=meta["digest"],
            diff_id=meta["diff_id"],
            size=size,
            media_type=meta.get("media_type", OCI_LAYER_GZIP),
            data=data,
            path=None if data is not None else path,
            entries=list(meta.get("entries") or []),
        )

    def close(self) -> None:
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def __enter__(self) -> Layer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HashingSink:
    """Where the gzip stream goes: hashed and counted, in memory up to `limit` bytes, then in a
    temporary file."""

    def __init__(self, limit: int, tmp_dir: str | os.PathLike[str] | None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.tmp_dir = tmp_dir
        self.buffer: io.BytesIO | None = io.BytesIO()
        self.file: IO[bytes] | None = None
        self.path: Path | None = None

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.buffer is not None and self.size > self.limit:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix="skylane-layer-", suffix=".tar.gz", dir=self.tmp_dir, delete=False
            )
            self.file, self.path = handle, Path(handle.name)
            handle.write(self.buffer.getvalue())
            self.buffer = None
        (self.buffer if self.buffer is not None else self.file).write(data)  # type: ignore[union-attr]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _TarStream:
    """What tarfile writes to: hashed (the diff_id), counted, then gzipped."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self.gz = gz
        self.sha = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.offset += len(data)
        self.gz.write(data)
        return len(data)

    def tell(self) -> int:
        return self.offset


def _info(name: str, kind: bytes, mode: int, mtime: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.size = size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_from_directory(
    source: str | os.PathLike[str],
    target: str = "/opt/skylane/project",
    *,
    ignore_files: Sequence[str] = IGNORE_FILES,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    mtime: int | None = None,
    compress_level: int = COMPRESS_LEVEL,
    spool_limit: int = SPOOL_LIMIT,
    tmp_dir: str | os.PathLike[str] | None = None,
    field_name: str = "project_dir",
) -> Layer:
    """The tree at `source` as a reproducible gzipped tar layer placed at `target` in the
    image (see the module docstring). `mtime` defaults to `SOURCE_DATE_EPOCH`, else 0."""
    root = Path(source)
    if not root.is_dir():
        raise InvalidInput(f"{str(root)!r} is not a directory", field=field_name)
    target_path = normalize_image_path(target)
    timestamp = source_date_epoch() if mtime is None else int(mtime)
    rules = IgnoreRules.for_tree(root, ignore_files, excludes)

    sink = _HashingSink(spool_limit, tmp_dir)
    entries: list[str] = []
    try:
        with gzip.GzipFile(
            filename="", mode="wb", compresslevel=compress_level, fileobj=sink, mtime=0
        ) as gz:
            stream = _TarStream(gz)
            with tarfile.open(
                fileobj=stream, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
            ) as tar:  # type: ignore[call-overload]
                parts = target_path.strip("/").split("/")
                for depth in range(1, len(parts) + 1):
                    name = "/".join(parts[:depth])
                    tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, timestamp))
                    entries.append(name + "/")
                _add_tree(tar, root, "", target_path.strip("/"), rules, timestamp, entries)
            diff_id = "sha256:" + stream.sha.hexdigest()
    except BaseException:
        sink.close()
        if sink.path is not None:
            sink.path.unlink(missing_ok=True)
        raise
    sink.close()
    digest = "sha256:" + sink.sha.hexdigest()
    if sink.buffer is not None:
        return Layer(digest, diff_id, sink.size, data=sink.buffer.getvalue(), entries=entries)
    return Layer(digest, diff_id, sink.size, path=sink.path, entries=entries, temporary=True)


def _add_tree(
    tar: tarfile.TarFile,
    directory: Path,
    relative: str,
    prefix: str,
    rules: IgnoreRules,
    mtime: int,
    entries: list[str],
) -> None:
    try:
        children = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        raise InvalidInput(
            f"cannot read directory {str(directory)!r}: {exc.strerror}", field="project_dir"
        ) from None
    for entry in children:
        rel = f"{relative}/{entry.name}" if relative else entry.name
        name = f"{prefix}/{rel}"
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if rules.ignored(rel, is_dir=is_dir):
            continue
        if stat.S_ISLNK(st.st_mode):
            info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
            info.linkname = os.readlink(entry.path)
            tar.addfile(info)
            entries.append(name)
        elif is_dir:
            tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, mtime))
            entries.append(name + "/")
            _add_tree(tar, Path(entry.path), rel, prefix, rules, mtime, entries)
        elif stat.S_ISREG(st.st_mode):
            mode = 0o755 if st.st_mode & 0o111 else 0o644
            with open(entry.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                tar.addfile(_info(name, tarfile.REGTYPE, mode, mtime, size), f)
            entries.append(name)
        else:
            log.info("leaving %s out of the layer: not a file, directory or link", rel)


def layer_listing(data: bytes | Path) -> dict[str, tarfile.TarInfo]:
    """The entries of a gzipped tar layer by name (directories with a trailing `/`), for
    inspection and tests."""
    source: Any = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
        return {(m.name + "/" if m.isdir() else m.name): m for m in tar.getmembers()}


def read_layer_file(data: bytes | Path, name: str) -> bytes:
    """The content of the file `name` (as in the tar, e.g. `opt/skylane/project/a.py`)."""
    source: Any = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise KeyError(name)
        return member.read()
