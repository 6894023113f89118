"""Reproducible layers: same tree, same bytes; what is left out; how entries are normalised."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from skylane.errors import InvalidInput
from skylane.images.layers import (
    IgnoreRules,
    Layer,
    layer_from_directory,
    layer_listing,
    normalize_image_path,
    read_layer_file,
)

PREFIX = "opt/skylane/project/"


def make_tree(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "etl.py").write_text("def main():\n    return 42\n")
    (root / "flows" / "__init__.py").write_text("")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o700)
    (root / "README.md").write_text("# project\n")
    (root / "data").mkdir()
    (root / "data" / "rows.csv").write_text("a,b\n1,2\n")
    (root / "data" / "big.log").write_text("log\n")
    # Left out by default.
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "flows" / "__pycache__").mkdir()
    (root / "flows" / "__pycache__" / "etl.cpython-312.pyc").write_bytes(b"\0\0")
    (root / "stray.pyc").write_bytes(b"\0")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    return root


def names(layer: Layer) -> list[str]:
    return list(layer_listing(layer.read_bytes()))


def test_same_tree_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    first = layer_from_directory(tree)
    second = layer_from_directory(tree)
    assert first.read_bytes() == second.read_bytes()
    assert (first.digest, first.diff_id, first.size) == (second.digest, second.diff_id, second.size)
    data = first.read_bytes()
    assert first.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert first.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    assert first.size == len(data)
    # gzip header: no file name flag, mtime 0.
    assert data[:2] == b"\x1f\x8b" and data[3] == 0 and data[4:8] == b"\0\0\0\0"


def test_mtimes_owners_and_location_do_not_matter(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    copy = tmp_path / "elsewhere" / "b"
    shutil.copytree(tree, copy, symlinks=True)
    later = time.time() + 86400 * 365
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (later, later))
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                os.chown(Path(dirpath) / name, 1234, 5678)
    # A different but equivalent mode (group/other bits) normalises the same way.
    (copy / "README.md").chmod(0o600)
    (copy / "run.sh").chmod(0o755)
    assert layer_from_directory(copy).digest == layer_from_directory(tree).digest


def test_a_changed_file_changes_the_digest(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    before = layer_from_directory(tree)
    (tree / "flows" / "etl.py").write_text("def main():\n    return 43\n")
    after = layer_from_directory(tree)
    assert after.digest != before.digest and after.diff_id != before.diff_id
    (tree / "flows" / "etl.py").write_text("def main():\n    return 42\n")
    assert layer_from_directory(tree).digest == before.digest
    (tree / "flows" / "etl.py").chmod(0o755)  # the executable bit is content
    assert layer_from_directory(tree).digest != before.digest
    # So is a file's name.
    (tree / "flows" / "etl.py").chmod(0o644)
    (tree / "flows" / "etl.py").rename(tree / "flows" / "etl2.py")
    assert layer_from_directory(tree).digest != before.digest


def test_entries_are_sorted_and_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    tree = make_tree(tmp_path / "a")
    (tree / "link.py").symlink_to("flows/etl.py")
    layer = layer_from_directory(tree)
    listing = layer_listing(layer.read_bytes())
    assert list(listing) == [
        "opt/",
        "opt/skylane/",
        PREFIX,
        PREFIX + "README.md",
        PREFIX + "data/",
        PREFIX + "data/big.log",
        PREFIX + "data/rows.csv",
        PREFIX + "flows/",
        PREFIX + "flows/__init__.py",
        PREFIX + "flows/etl.py",
        PREFIX + "link.py",
        PREFIX + "run.sh",
    ]
    assert names(layer) == layer.entries
    for name, member in listing.items():
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == 0
        assert not member.pax_headers
        if member.isdir():
            assert member.mode == 0o755, name
    assert listing[PREFIX + "run.sh"].mode == 0o755
    assert listing[PREFIX + "README.md"].mode == 0o644
    assert listing[PREFIX + "link.py"].issym()
    assert listing[PREFIX + "link.py"].linkname == "flows/etl.py"
    content = read_layer_file(layer.read_bytes(), PREFIX + "flows/etl.py")
    assert content == b"def main():\n    return 42\n"


def test_source_date_epoch_sets_the_mtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "a")
    zero = layer_from_directory(tree)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = layer_from_directory(tree)
    assert dated.digest != zero.digest
    assert {m.mtime for m in layer_listing(dated.read_bytes()).values()} == {1700000000}
    assert layer_from_directory(tree, mtime=0).digest == zero.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidInput) as caught:
        layer_from_directory(tree)
    assert caught.value.field == "SOURCE_DATE_EPOCH"


def test_ignore_files_leave_paths_out(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    (tree / ".skylaneignore").write_text(
        "# logs are not code\n*.log\n\n/README.md\ndata/\n!data/\nsecrets/\n"
    )
    (tree / "secrets").mkdir()
    (tree / "secrets" / "key").write_text("k")
    (tree / "flows" / "secrets").write_text("a file, not a directory: kept")
    (tree / ".dockerignore").write_text("flows/**/*.tmp\n")
    (tree / "flows" / "deep").mkdir()
    (tree / "flows" / "deep" / "x.tmp").write_text("")
    (tree / "flows" / "deep" / "x.py").write_text("")
    (tree / "flows" / "top.tmp").write_text("")
    listed = names(layer_from_directory(tree))
    assert PREFIX + "data/big.log" not in listed
    assert PREFIX + "README.md" not in listed
    assert PREFIX + "data/rows.csv" in listed  # `!data/` took the directory back
    assert PREFIX + "secrets/" not in listed and PREFIX + "secrets/key" not in listed
    assert PREFIX + "flows/secrets" in listed  # `secrets/` matches directories only
    assert PREFIX + "flows/deep/x.tmp" not in listed
    assert PREFIX + "flows/top.tmp" not in listed  # `**/` matches no directory too
    assert PREFIX + "flows/deep/x.py" in listed
    for default in (".git/", ".venv/", "flows/__pycache__/", "stray.pyc"):
        assert PREFIX + default not in listed
    assert not any("/.git/" in n or n.endswith(".pyc") for n in listed)
    # Only the ignore files asked for are read.
    listed = names(layer_from_directory(tree, ignore_files=()))
    assert PREFIX + "README.md" in listed and PREFIX + ".git/" not in listed


def test_ignore_rules() -> None:
    rules = IgnoreRules(["*.log", "build/", "/top.txt", "docs/*.md", "!docs/keep.md", "a?c"])
    assert rules.ignored("x.log", is_dir=False)
    assert rules.ignored("deep/down/x.log", is_dir=False)
    assert rules.ignored("build", is_dir=True) and not rules.ignored("build", is_dir=False)
    assert rules.ignored("sub/build", is_dir=True)
    assert rules.ignored("top.txt", is_dir=False)
    assert not rules.ignored("sub/top.txt", is_dir=False)
    assert rules.ignored("docs/a.md", is_dir=False)
    assert not rules.ignored("docs/keep.md", is_dir=False)
    assert not rules.ignored("docs/sub/a.md", is_dir=False)
    assert rules.ignored("abc", is_dir=False) and not rules.ignored("a/c", is_dir=False)


def test_target_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    layer = layer_from_directory(tree, "/app/")
    assert names(layer)[:2] == ["app/", "app/README.md"]
    assert normalize_image_path("/opt//skylane/./x/") == "/opt/skylane/x"
    for bad in ("relative/path", "/", "/opt/../etc"):
        with pytest.raises(InvalidInput) as caught:
            layer_from_directory(tree, bad)
        assert caught.value.field == "target"
    with pytest.raises(InvalidInput) as caught:
        layer_from_directory(tmp_path / "missing")
    assert caught.value.field == "project_dir"


def test_large_layers_spool_to_a_temporary_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a")
    (tree / "blob.bin").write_bytes(os.urandom(200_000))
    in_memory = layer_from_directory(tree)
    spooled = layer_from_directory(tree, spool_limit=1000, tmp_dir=tmp_path)
    assert in_memory.data is not None and in_memory.path is None
    assert spooled.data is None and spooled.path is not None and spooled.path.exists()
    assert spooled.digest == in_memory.digest and spooled.size == in_memory.size
    assert spooled.source == spooled.path
    assert spooled.read_bytes() == in_memory.read_bytes()
    path = spooled.path
    spooled.close()
    assert not path.exists()


def test_saved_layers_load_back_and_damage_is_ignored(tmp_path: Path) -> None:
    layer = layer_from_directory(make_tree(tmp_path / "a"))
    cache = tmp_path / "cache" / "layer.tar.gz"
    layer.save(cache)
    loaded = Layer.load(cache)
    assert loaded is not None
    assert (loaded.digest, loaded.diff_id, loaded.size) == (layer.digest, layer.diff_id, layer.size)
    assert loaded.read_bytes() == layer.read_bytes() and loaded.entries == layer.entries
    cache.write_bytes(cache.read_bytes()[:-1] + b"X")
    assert Layer.load(cache) is None
    assert Layer.load(tmp_path / "nothing.tar.gz") is None


def test_the_layer_is_a_valid_tar_for_extraction(tmp_path: Path) -> None:
    layer = layer_from_directory(make_tree(tmp_path / "a"))
    out = tmp_path / "out"
    with tarfile.open(fileobj=layer.open(), mode="r:gz") as tar:
        tar.extractall(out, filter="data")
    assert (out / PREFIX / "flows" / "etl.py").read_text().endswith("return 42\n")
    assert os.access(out / PREFIX / "run.sh", os.X_OK)
