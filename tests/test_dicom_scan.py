"""DICOM discovery at archive size: headers read by a pool of processes give the serial result, a
progress bar shows for many files only, and the scan cache makes a later scan read only what is new or
changed. Trees are small real-scan series written by benchmarks/dicom_series.py."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from benchmarks.dicom_series import write_localizer, write_non_image, write_series
from conftest import cropped_image
from gmim.data import dicom
from gmim.data.dicom import find_series

FILES = 19  #: in the tree below: 4 series of 4 slices, a localizer, a structure set and a text file


@pytest.fixture(scope="module")
def t1(itk_paths) -> tuple[np.ndarray, np.ndarray]:
    """The ITK example T1 cropped to 24×24×4 (four slices per series: a fast tree), with its affine."""
    return cropped_image(itk_paths["t1"], (50, 50, 30), (24, 24, 4))


@pytest.fixture
def tree(t1, tmp_path) -> Path:
    """Series in their own folders (two patients), two series sharing a folder, a localizer, a structure
    set and a file that is not DICOM."""
    root = tmp_path / "archive"
    write_series(*t1, root / "P1" / "T1", patient_id="P1")
    write_series(*t1, root / "P2" / "T1", patient_id="P2")
    write_series(*t1, root / "P2" / "mixed", patient_id="P2", prefix="A")
    write_series(*t1, root / "P2" / "mixed", patient_id="P2", prefix="B", series_number=2)
    write_localizer(t1[0][:, :, 0], root / "P2" / "mixed")
    write_non_image(root / "P1")
    (root / "P1" / "NOTES").write_bytes(b"not a DICOM file")
    return root


@pytest.fixture(autouse=True)
def fresh_index():
    """Each scan below is a new one, not the index an earlier call left in this process."""
    dicom._index.cache_clear()
    yield
    dicom._index.cache_clear()


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """The files a (serial) scan opens: checked for the DICOM preamble or read by pydicom."""
    paths: list[Path] = []

    def counting(function):
        def wrapper(path: Path):
            paths.append(path)
            return function(path)

        return wrapper

    monkeypatch.setattr(dicom, "_is_dicom", counting(dicom._is_dicom))
    monkeypatch.setattr(dicom, "_read_header", counting(dicom._read_header))
    return paths


def scan(folder: Path, **options) -> tuple[list, list[str]]:
    dicom._index.cache_clear()
    return find_series(folder, **options)


def test_pool_finds_what_a_serial_scan_finds(tree, monkeypatch):
    pools = []

    class Recorded(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dicom, "POOL_MIN_FILES", 0)
    monkeypatch.setattr(dicom, "ProcessPoolExecutor", Recorded)
    serial = scan(tree, workers=1)
    assert not pools
    assert scan(tree, workers=2) == serial
    assert pools == [(2,)]
    found, notes = serial
    assert [str(path.relative_to(tree)) for path, _ in found] == [
        "P1/T1",
        "P2/T1",
        *sorted(f"P2/mixed/{s.uid}" for path, s in found if path.parent.name == "mixed"),
    ]
    assert all(len(s.slices) == 4 for _, s in found) and len(notes) == 1 and "localizer" in notes[0]


def test_progress_bar_for_many_files_only(tree, monkeypatch, capsys):
    scan(tree, workers=1)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(dicom, "PROGRESS_MIN_FILES", 10)
    scan(tree, workers=1)
    err = capsys.readouterr().err
    assert "reading DICOM headers" in err and f"{FILES}/{FILES}" in err and "file/s" in err


def test_second_scan_reads_no_file(tree, tmp_path, opened):
    cache = tmp_path / "scan.json"
    first = scan(tree, cache=cache)
    assert len(set(opened)) == FILES and first == scan(tree)
    opened.clear()
    assert scan(tree, cache=cache) == first
    assert opened == []  # not even the structure set or the file that is not DICOM
    stored = json.loads(cache.read_text())
    assert stored["version"] == dicom.SCAN_CACHE_VERSION and len(stored["files"]) == FILES
    assert str(tree.resolve() / "P1" / "NOTES") in stored["files"]


def test_changed_files_are_read_again(tree, tmp_path, opened):
    cache = tmp_path / "scan.json"
    scan(tree, cache=cache)
    touched, grown = tree / "P1" / "T1" / "IM0002.dcm", tree / "P2" / "T1" / "IM0003.dcm"
    status = touched.stat()
    os.utime(touched, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    status = grown.stat()
    with grown.open("ab") as file:  # a new size, the same mtime
        file.write(b"\0\0")
    os.utime(grown, ns=(status.st_atime_ns, status.st_mtime_ns))
    opened.clear()
    cached = scan(tree, cache=cache)
    assert sorted(set(opened)) == sorted([touched, grown]) and cached == scan(tree)


def test_added_and_removed_series(tree, t1, tmp_path, opened):
    cache = tmp_path / "scan.json"
    before, _ = scan(tree, cache=cache)
    write_series(*t1, tree / "P3" / "T1", patient_id="P3")
    shutil.rmtree(tree / "P1" / "T1")
    opened.clear()
    after, notes = scan(tree, cache=cache)
    assert sorted(set(opened)) == sorted((tree / "P3" / "T1").iterdir())
    names = [str(path.relative_to(tree)) for path, _ in after]
    assert "P3/T1" in names and "P1/T1" not in names and len(after) == len(before)
    assert (after, notes) == scan(tree)
    files = json.loads(cache.read_text())["files"]
    assert len(files) == FILES and not any("/P1/T1/" in key for key in files)


def test_a_sub_folder_scan_keeps_the_other_entries(tree, tmp_path, opened):
    cache = tmp_path / "scan.json"
    scan(tree, cache=cache)
    opened.clear()
    sub = scan(tree / "P2", cache=cache)
    assert opened == [] and sub == scan(tree / "P2")
    assert len(json.loads(cache.read_text())["files"]) == FILES
    opened.clear()
    scan(tree, cache=cache)
    assert opened == []


@pytest.mark.parametrize(
    "content",
    [b'{"version": 1, "files": {', b"\x89PNG\r\n", b"[1, 2]", b"", b'{"version": 0, "fields": [], "files": {}}'],
    ids=["truncated", "binary", "list", "empty", "old version"],
)
def test_a_corrupt_cache_is_rebuilt(tree, tmp_path, opened, content):
    cache = tmp_path / "scan.json"
    cache.write_bytes(content)
    assert scan(tree, cache=cache) == scan(tree)
    assert len(set(opened)) == FILES
    assert len(json.loads(cache.read_text())["files"]) == FILES
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_corrupt_entry_is_read_again(tree, tmp_path, opened):
    cache = tmp_path / "scan.json"
    scan(tree, cache=cache)
    stored = json.loads(cache.read_text())
    key = str(tree.resolve() / "P1" / "T1" / "IM0001.dcm")
    stored["files"][key][2] = stored["files"][key][2][:3]
    cache.write_text(json.dumps(stored))
    opened.clear()
    cached = scan(tree, cache=cache)
    assert set(opened) == {tree / "P1" / "T1" / "IM0001.dcm"} and cached == scan(tree)
