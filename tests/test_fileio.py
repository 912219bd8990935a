"""The one atomic write (policylang.fileio): what fmt and the key files rely on."""

import os

import pytest

from policylang.fileio import write_atomically


def test_replaces_contents_and_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "a.policy"
    p.write_text("old")
    write_atomically(p, "new ✓")
    assert p.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(tmp_path) == ["a.policy"]


def test_keeps_mode_or_sets_it(tmp_path):
    p = tmp_path / "a.policy"
    p.write_text("x")
    os.chmod(p, 0o640)
    write_atomically(p, "y", keep_mode=True)
    assert os.stat(p).st_mode & 0o777 == 0o640
    k = tmp_path / "keys.json"
    write_atomically(k, "{}", mode=0o600)
    assert os.stat(k).st_mode & 0o777 == 0o600


def test_follows_a_symlink_and_keeps_it(tmp_path):
    target = tmp_path / "real.policy"
    target.write_text("old")
    link = tmp_path / "link.policy"
    link.symlink_to(target)
    write_atomically(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "a.policy"
    p.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(p, "\ud800")  # a lone surrogate cannot be encoded
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.policy"]


def test_without_following_links_nothing_is_written_through_one(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.chmod(outside, 0o600)
    link = tmp_path / "a.policy"
    link.symlink_to(outside)  # appeared after the caller checked, say
    write_atomically(link, "new", keep_mode=True, follow_links=False)
    assert outside.read_text() == "secret"  # the link's target is untouched
    assert not link.is_symlink() and link.read_text() == "new"
    assert os.stat(link).st_mode & 0o777 != 0o777  # not the link's own bits


def test_keep_mode_without_following_links_keeps_a_regular_files_bits(tmp_path):
    p = tmp_path / "a.policy"
    p.write_text("old")
    os.chmod(p, 0o640)
    write_atomically(p, "new", keep_mode=True, follow_links=False)
    assert p.read_text() == "new" and os.stat(p).st_mode & 0o777 == 0o640
