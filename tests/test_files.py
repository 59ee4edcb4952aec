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


def test_threads_writing_one_path_at_once_each_leave_a_whole_file(tmp_path):
    import threading

    path = tmp_path / "out.bin"
    blobs = [bytes([i]) * 2_000_000 for i in range(8)]
    errors = []

    def write(blob: bytes) -> None:
        try:
            write_atomic(path, blob)
        except OSError as exc:  # with one shared temporary file, one thread renames it away from another
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes() in blobs  # one writer's whole content, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
