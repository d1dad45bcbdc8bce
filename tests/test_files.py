"""tflite_export.files, the file and IO helpers of every package: modes, all-or-nothing writes, signals, stale
temporary files, clear errors, safe reading."""

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tflite_export import files

ROOT = Path(__file__).resolve().parents[1]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _temps(folder) -> list:
    return sorted(p.name for p in Path(folder).rglob(".*.tmp*"))


@pytest.fixture
def umask():
    def set_umask(value):
        os.umask(value)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


def test_importing_the_file_helpers_does_not_import_tensorflow():
    code = (
        "import sys; import tflite_export.files; from tflite_export import atomic_write; print('tensorflow' in "
        "sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_get_0666_minus_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    written = [
        files.atomic_write(tmp_path / "a.bin", b"x"),
        files.atomic_write_json(tmp_path / "b.json", {"a": 1}),
        *files.write_files(tmp_path / "sub", {"c.txt": "c", "d/e.txt": "e"}),
        files.atomic_write_npz(tmp_path / "f.npz", {"x": np.arange(3)}),
    ]
    with files.staged_path(tmp_path / "g.bin") as tmp:
        with open(tmp, "wb") as f:  # a writer that wants a file name
            f.write(b"g")
    written.append(tmp_path / "g.bin")
    with files.staged_path(tmp_path / "h.bin") as tmp:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))  # a writer that makes private files (mkstemp)
    written.append(tmp_path / "h.bin")
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("existing_mode", [0o644, 0o640, 0o755])
def test_replacing_a_file_keeps_its_mode(tmp_path, umask, existing_mode):
    umask(0o077)  # what a new file would get: 0600, which must not leak onto the replaced files
    for name in ("a.bin", "b.txt", "c.json", "d.bin"):
        (tmp_path / name).write_bytes(b"old")
        os.chmod(tmp_path / name, existing_mode)
    files.atomic_write(tmp_path / "a.bin", b"new")
    files.write_files(tmp_path, {"b.txt": "new"}, overwrite=True)
    files.atomic_write_json(tmp_path / "c.json", [1])
    with files.staged_path(tmp_path / "d.bin") as tmp:
        Path(tmp).write_bytes(b"new")
    for name in ("a.bin", "b.txt", "c.json", "d.bin"):
        assert _mode(tmp_path / name) == existing_mode, name
        assert (tmp_path / name).read_bytes() != b"old"


def _failing_rename(monkeypatch, fail_name: str):
    real_replace, real_link = os.replace, os.link

    def replace(src, dst, *a, **k):
        if Path(dst).name == fail_name and Path(src).name.endswith(".tmp"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, *a, **k)

    def link(src, dst, *a, **k):
        if Path(dst).name == fail_name and not Path(dst).name.startswith("."):
            raise OSError(errno.EIO, "Input/output error")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)


def test_write_files_with_overwrite_is_all_or_nothing_when_a_later_rename_fails(tmp_path, monkeypatch):
    for name in ("a.txt", "c.txt"):
        (tmp_path / name).write_text(f"old {name}")
        os.chmod(tmp_path / name, 0o640)
    _failing_rename(monkeypatch, "c.txt")
    with pytest.raises(OSError) as info:
        files.write_files(tmp_path, {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}, overwrite=True)
    assert "c.txt" in str(info.value) and info.value.errno == errno.EIO
    # a.txt was replaced before c.txt failed: it is put back, with its mode; b.txt was new: it is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt"]
    assert (tmp_path / "a.txt").read_text() == "old a.txt" and (tmp_path / "c.txt").read_text() == "old c.txt"
    assert _mode(tmp_path / "a.txt") == 0o640
    monkeypatch.undo()
    files.write_files(tmp_path, {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}, overwrite=True)
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt", "c.txt")] == ["new a", "new b", "new c"]
    assert _temps(tmp_path) == []


def test_write_files_without_overwrite_removes_what_it_wrote_when_a_later_rename_fails(tmp_path, monkeypatch):
    _failing_rename(monkeypatch, "b.txt")
    with pytest.raises(OSError, match="b.txt"):
        files.write_files(tmp_path / "new", {"a.txt": "a", "b.txt": "b"})
    assert not (tmp_path / "new").exists()


def test_write_files_never_replaces_a_file_that_appears_after_the_check(tmp_path, monkeypatch):
    real_stage = files._stage

    def stage(target, data):  # another process writes b.txt while ours are being staged
        if target.name == "b.txt":
            target.write_text("theirs")
        return real_stage(target, data)

    monkeypatch.setattr(files, "_stage", stage)
    with pytest.raises(FileExistsError, match="b.txt"):
        files.write_files(tmp_path, {"a.txt": "ours", "b.txt": "ours"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "theirs"


def test_path_problems_are_raised_before_writing_and_name_the_path(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(NotADirectoryError) as info:
        files.write_files(tmp_path / "afile", {"m.tflite": b"1"})
    assert info.value.errno == errno.ENOTDIR
    assert str(tmp_path / "afile") in str(info.value) and "is a file, not a folder" in str(info.value)
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        files.atomic_write(tmp_path / "afile" / "deeper" / "x.json", "{}")
    with pytest.raises(IsADirectoryError, match="adir: it is a folder, not a file"):
        files.atomic_write(tmp_path / "adir", b"1")
    with pytest.raises(IsADirectoryError):
        files.write_files(tmp_path, {"ok.txt": "1", "adir": "2"}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert (tmp_path / "afile").read_text() == "x"
    assert files.check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(NotADirectoryError, match="afile is a file"):
        files.check_output_folder(tmp_path / "afile" / "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_refused_before_writing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        with pytest.raises(PermissionError, match="permission denied"):
            files.write_files(locked, {"a.txt": "a"})
        with pytest.raises(PermissionError, match="permission denied"):
            files.check_output_folder(locked / "sub")
    finally:
        os.chmod(locked, 0o755)


def test_os_errors_while_writing_name_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as info:
        files.atomic_write(tmp_path / "big.bin", b"x" * 100)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"cannot write {tmp_path / 'big.bin'}: no space left on the device; free some space or write elsewhere"
    )
    assert list(tmp_path.iterdir()) == []

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".x.123.abcdef12.tmp"))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError) as info:
        files.atomic_write(tmp_path / "x.json", "{}")
    assert str(info.value).startswith(f"cannot write {tmp_path / 'x.json'}: permission denied")
    assert ".tmp" not in str(info.value)


def test_describe_os_error():
    err = PermissionError(errno.EACCES, "Permission denied", "/some/model.keras")
    assert files.describe_os_error(err, "read") == "cannot read /some/model.keras: permission denied"
    err = OSError(errno.EROFS, "Read-only file system", "/ro/out.json")
    assert files.describe_os_error(err, "write") == "cannot write /ro/out.json: read-only file system; write elsewhere"


def test_atomic_savefig(tmp_path, umask):
    from keras_eff.reporting import agg_subplots

    fig, ax = agg_subplots((2, 2))
    ax.plot([0, 1], [1, 0])
    path = files.atomic_savefig(fig, tmp_path / "plot.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _mode(path) == 0o644
    files.atomic_savefig(fig, tmp_path / "plot.svg")
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()
    assert _temps(tmp_path) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_a_target_are_swept_by_the_next_write(tmp_path):
    dead = _dead_pid()
    stale_dead = tmp_path / f".a.txt.{dead}.0123abcd.tmp"  # a writer killed with SIGKILL
    stale_keras = tmp_path / f".a.txt.{dead}.0123abcd.tmp.txt"  # from staged_path
    stale_old = tmp_path / ".a.txt.k2j4_x9z.tmp"  # an old mkstemp temporary, two hours old
    fresh_live = tmp_path / f".a.txt.{os.getppid()}.0123abcd.tmp"  # another process still writing
    fresh_old_style = tmp_path / ".a.txt.q8w7e6r5.tmp"  # an mkstemp name, recent: maybe another writer's
    user_file = tmp_path / ".a.txt.my notes.tmp"  # not named like ours: never touched
    other_target = tmp_path / f".b.txt.{dead}.0123abcd.tmp"  # another target's: swept by writes to b.txt
    for p in (stale_dead, stale_keras, stale_old, fresh_live, fresh_old_style, user_file, other_target):
        p.write_text("partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale_old, (two_hours_ago, two_hours_ago))
    files.atomic_write(tmp_path / "a.txt", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.txt", fresh_live.name, fresh_old_style.name, user_file.name, other_target.name]
    )
    files.write_files(tmp_path, {"b.txt": "done"})
    assert not other_target.exists()


def _run_script(code: str, tmp_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


_SLOW_WRITE = """
    import os, sys, time
    from tflite_export import files
    real_fsync = os.fsync
    calls = []
    def slow_fsync(fd):  # the second file is being staged: the first temporary file exists
        calls.append(fd)
        real_fsync(fd)
        if len(calls) == 2:
            print("staged", flush=True)
            time.sleep(60)
    os.fsync = slow_fsync
"""


def test_sigterm_during_a_write_leaves_no_temporary_file_and_the_old_files(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    proc = _run_script(
        _SLOW_WRITE
        + """
    with files.cleanup_on_termination():
        files.write_files(".", {"a.txt": "new a", "b.txt": "new b"}, overwrite=True)
    """,
        tmp_path,
    )
    assert proc.stdout.readline().strip() == "staged"
    assert len(_temps(tmp_path)) == 2
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Terminated" in err
    assert _temps(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_sigkill_leaves_temporary_files_that_the_next_write_removes(tmp_path):
    proc = _run_script(
        _SLOW_WRITE
        + """
    files.write_files(".", {"a.txt": "a", "b.txt": "b"})
    """,
        tmp_path,
    )
    assert proc.stdout.readline().strip() == "staged"
    proc.kill()
    proc.wait(timeout=30)
    left = _temps(tmp_path)
    assert len(left) == 2 and all(f".{proc.pid}." in name for name in left)
    files.write_files(tmp_path, {"a.txt": "a", "b.txt": "b"})
    assert _temps(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_remove_staged_temps_removes_what_this_process_staged(tmp_path):
    with pytest.raises(RuntimeError):
        with files.staged_path(tmp_path / "m.keras") as tmp:
            Path(tmp).write_bytes(b"half")
            assert files.remove_staged_temps() == [tmp] and not Path(tmp).exists()
            raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []


def test_read_json_and_yaml_name_the_file_and_never_build_python_objects(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    (tmp_path / "ok.yaml").write_text("a: [1, 2]\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "evil.yaml").write_text("a: !!python/object/apply:os.system ['echo pwned']\n")
    (tmp_path / "folder.json").mkdir()
    assert files.read_json(tmp_path / "ok.json", "config") == {"a": [1, 2]}
    assert files.read_yaml_or_json(tmp_path / "ok.yaml", "config") == {"a": [1, 2]}
    assert files.read_yaml_or_json(tmp_path / "ok.json", "config") == {"a": [1, 2]}
    with pytest.raises(FileNotFoundError, match=f"search result {tmp_path / 'none.json'} does not exist"):
        files.read_json(tmp_path / "none.json", "search result")
    with pytest.raises(ValueError, match=r"cache .*bad.json is corrupt \(not JSON: .*\); delete it"):
        files.read_json(tmp_path / "bad.json", "cache", "; delete it")
    with pytest.raises(ValueError, match="bytes.json is corrupt"):
        files.read_json(tmp_path / "bytes.json", "cache")
    with pytest.raises(IsADirectoryError, match="folder.json is a folder, not a file"):
        files.read_json(tmp_path / "folder.json", "cache")
    with pytest.raises(ValueError, match="evil.yaml is not a readable DONNA config"):
        files.read_yaml_or_json(tmp_path / "evil.yaml", "DONNA config")
    with pytest.raises(FileNotFoundError, match="DONNA config .*none.yaml does not exist"):
        files.read_yaml_or_json(tmp_path / "none.yaml", "DONNA config")


def test_donna_reads_through_the_shared_helpers():
    import importlib

    donna = {
        m: importlib.import_module(f"keras_eff.donna.{m}")
        for m in ("library", "measure_cache", "predictor", "run", "search", "space")
    }
    for m in ("library", "measure_cache", "predictor", "search", "space"):
        assert donna[m].read_json is files.read_json
    assert donna["run"].read_yaml_or_json is files.read_yaml_or_json is donna["space"].read_yaml_or_json
