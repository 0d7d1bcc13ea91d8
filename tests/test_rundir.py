"""What `train.py --out DIR` may touch (minimtl/machinery/rundir.py): one test per rule.

Only a minimtl run is ever replaced, one process at a time writes it, and a temporary directory is removed
only once the process that made it is dead.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minimtl.guards.errors import UserError
from minimtl.machinery.rundir import (MARKER, RunLock, check_out, is_finished, pid_alive, read_marker,
                                      stale_temporaries, write_marker)

ROOT = Path(__file__).resolve().parents[1]
LONG_AGO = (1_000_000_000, 1_000_000_000)  # 2001: any rewrite of a file would show in its mtime


def snapshot(path):
    """All that "left untouched" promises about a file or a tree: names, types, modes, mtimes, bytes."""
    path = Path(path)
    items = [path, *sorted(path.rglob("*"))] if path.is_dir() and not path.is_symlink() else [path]
    return [(str(p), os.lstat(p).st_mode, os.lstat(p).st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in items]


def user_folder(path):
    """A folder of someone's own files, that a careless --out would have deleted."""
    (path / "photos").mkdir(parents=True)
    (path / "notes.txt").write_text("do not lose this\n")
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for p in (path / "photos" / "cat.jpg", path / "notes.txt", path / "photos", path):
        os.utime(p, LONG_AGO)
    return path


def dead_pid():
    """The pid of a process that has run and been reaped (pids are reused only after wrapping around)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


# --- check_out: what may be written, decided before any work -----------------------------------------

def test_a_missing_path_is_a_new_run_and_its_parents_are_created(tmp_path):
    out = tmp_path / "runs" / "2024" / "first"
    assert check_out(out, overwrite=False) == "new"
    assert out.parent.is_dir() and not out.exists()
    assert list(out.parent.iterdir()) == []  # the writability probe is gone


def test_an_empty_directory_is_a_new_run(tmp_path):
    (tmp_path / "run").mkdir()
    assert check_out(tmp_path / "run", overwrite=False) == "new"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_is_refused_and_left_untouched(tmp_path, overwrite):
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes\n")
    os.utime(notes, LONG_AGO)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="is a file, not a run directory") as e:
        check_out(notes, overwrite=overwrite)
    assert str(e.value).startswith(f"{notes}: ")  # the message names the path, on one line
    assert snapshot(tmp_path) == before


def test_a_symlink_to_a_file_or_to_nothing_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "link").symlink_to(tmp_path / "notes.txt")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    for path in (tmp_path / "link", tmp_path / "dangling"):
        with pytest.raises(UserError, match="is a file, not a run directory"):
            check_out(path, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_symlink_to_a_directory_is_refused_with_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UserError, match="is a symbolic link: pass the directory it points to .*real"):
        check_out(tmp_path / "link", overwrite=True)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_user_files_is_refused_and_left_untouched(tmp_path, overwrite):
    folder = user_folder(tmp_path / "mydir")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="holds files that are not a minimtl run"):
        check_out(folder, overwrite=overwrite)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content", [
    '{"name": "my own run"}', '{"minimtl_run": true}', "[1]", "not json",
    "[" * 60_000,  # nested too deep for the JSON parser: no crash, just not a marker
    '{"minimtl_run": 1, "padding": "' + "x" * 100_000 + '"}',  # over the size a marker can have: not read whole
], ids=["someone else's", "bool version", "a list", "not json", "deeply nested", "too large"])
def test_a_run_json_that_minimtl_did_not_write_is_no_marker(tmp_path, content):
    folder = user_folder(tmp_path / "mydir")
    (folder / MARKER).write_text(content)
    with pytest.raises(UserError, match="holds files that are not a minimtl run"):
        check_out(folder, overwrite=True)


def test_an_earlier_run_is_replaced_only_with_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, finished=True)
    with pytest.raises(UserError, match="already holds a run: continue it with --resume, replace it with --overwrite"):
        check_out(run, overwrite=False)
    assert check_out(run, overwrite=True) == "overwrite"
    assert read_marker(run)["finished"] is True  # check_out only looks


def test_a_parent_that_is_a_file_cannot_be_written(tmp_path):
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    with pytest.raises(UserError, match=r"cannot write here \(a parent in the path is a file"):
        check_out(tmp_path / "notes.txt" / "run", overwrite=False)
    assert (tmp_path / "notes.txt").read_text() == "a user's notes\n"


def test_a_name_too_long_for_the_filesystem_cannot_be_written(tmp_path):
    with pytest.raises(UserError, match=r"cannot write here \(File name too long\)"):
        check_out(tmp_path / ("x" * 256), overwrite=False)
    # 250 bytes is a legal name, but the `.NAME.tmp-<pid>` sibling every save creates would not be: the
    # probe has that length, so this fails now rather than at the end of the first epoch.
    with pytest.raises(UserError, match=r"cannot write here \(File name too long\)"):
        check_out(tmp_path / ("x" * 250), overwrite=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_parent_cannot_be_written(tmp_path):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"cannot write here \(Permission denied\)"):
            check_out(parent / "run", overwrite=False)
    finally:
        parent.chmod(0o755)


# --- RunLock: one writer per run directory -------------------------------------------------------------

HOLD_THE_LOCK = """
import sys, time
from minimtl.machinery.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(run)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match=rf"another training process \(pid {holder.pid}\) is writing"):
            with RunLock(run):
                pass
    finally:
        holder.kill()  # not a clean exit: its lock file stays behind, still naming it
        holder.wait()
        holder.stdout.close()
    # The kernel released the dead process's lock; the file it left is simply taken over.
    with RunLock(run):
        assert (tmp_path / ".run.lock").read_text() == f"{os.getpid()}\n"


def test_the_lock_lives_beside_the_run_and_goes_away_after_use(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        run.mkdir()
        run.rename(tmp_path / ".run.old-1")  # a save swaps the run directory: the lock is unaffected
        assert (tmp_path / ".run.lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / ".run.lock").exists()
    with RunLock(run):  # the same process can take it again once released
        pass


def test_the_lock_is_not_reentrant_even_within_one_process(tmp_path):
    # flock belongs to an open file, not to a process: a second RunLock on the same run is a second writer.
    with RunLock(tmp_path / "run"):
        with pytest.raises(UserError, match=rf"\(pid {os.getpid()}\)"):
            with RunLock(tmp_path / "run"):
                pass


# --- stale temporaries: removed only when their owner is dead -----------------------------------------

def test_only_the_temporaries_of_dead_processes_are_stale(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    for name in (f".run.tmp-{dead}", f".run.old-{dead}", f".run.tmp-{alive}", f".run.old-{alive}",
                 f".other.tmp-{dead}", ".run.tmp-abc", f".run.tmp-{dead}.x"):
        (tmp_path / name).mkdir()
    (tmp_path / ".run.lock").write_text(f"{dead}\n")
    (tmp_path / f".run.old-{dead + 1}").symlink_to(tmp_path / ".run.tmp-abc")  # never a symlink
    assert stale_temporaries(tmp_path / "run") == [tmp_path / f".run.old-{dead}", tmp_path / f".run.tmp-{dead}"]
    assert stale_temporaries(tmp_path / "missing" / "run") == []


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # init exists, whoever owns it
    assert not pid_alive(dead_pid())
    assert not pid_alive(0) and not pid_alive(-1)  # these would address process groups, not a process


# --- the marker ----------------------------------------------------------------------------------------

def test_marker_round_trip_and_is_finished(tmp_path):
    assert read_marker(tmp_path) is None and not is_finished(tmp_path)
    write_marker(tmp_path, finished=False)
    marker = read_marker(tmp_path)
    assert marker["minimtl_run"] == 1 and marker["finished"] is False and "written" in marker
    assert not is_finished(tmp_path)
    write_marker(tmp_path, finished=True)
    assert is_finished(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [MARKER]  # no temporary file left
    assert json.loads((tmp_path / MARKER).read_text())["finished"] is True  # plain JSON, for people too
    assert not is_finished(tmp_path / "missing")
