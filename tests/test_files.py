"""One atomic write for every file the app writes (checkpoints, pictures, CSV, evaluation state)."""

import pytest

from vaestudio.core.files import write_atomic


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    write_atomic(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_write_keeps_old_file_and_removes_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # not bytes: fails after the temporary file was opened
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_missing_folder_is_an_oserror_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        write_atomic(tmp_path / "nope" / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []
