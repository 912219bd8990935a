"""``policylang fmt``: rewriting, --check, --diff, bad files and exit statuses (docs/cli.md)."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from policylang.cli import main

UGLY = "permit   agent to read on repo # why\n when a==b\n"
PRETTY = "permit agent to read on repo  # why\n  when a == b\n"
BAD = "permit agent to read on repo\n  when a == == b\n"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def _run(*args, input=None):
        return CliRunner().invoke(main, ["fmt", *args], input=input, catch_exceptions=False)

    return _run


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def read(path):
    return path.read_bytes().decode("utf-8")


def test_rewrites_in_place(run, tmp_path):
    p = write(tmp_path / "a.policy", UGLY)
    r = run("a.policy")
    assert r.exit_code == 0, r.output
    assert read(p) == PRETTY
    assert "reformatted a.policy" in r.stderr
    # a second run changes nothing and says nothing
    r = run("a.policy")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    assert read(p) == PRETTY


def test_formatted_file_is_not_rewritten(run, tmp_path):
    p = write(tmp_path / "a.policy", PRETTY)
    os.utime(p, (1_000_000, 1_000_000))
    assert run("a.policy").exit_code == 0
    assert p.stat().st_mtime == 1_000_000


def test_keeps_file_mode(run, tmp_path):
    p = write(tmp_path / "a.policy", UGLY)
    p.chmod(0o640)
    assert run("a.policy").exit_code == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert [f.name for f in tmp_path.iterdir()] == ["a.policy"]  # no temporary file left


def test_check(run, tmp_path):
    ugly = write(tmp_path / "ugly.policy", UGLY)
    pretty = write(tmp_path / "pretty.policy", PRETTY)
    r = run("--check", "ugly.policy", "pretty.policy")
    assert r.exit_code == 1
    assert "would reformat ugly.policy" in r.stderr
    assert "pretty.policy" not in r.output
    assert read(ugly) == UGLY and read(pretty) == PRETTY
    r = run("--check", "pretty.policy")
    assert r.exit_code == 0 and r.output == ""


def test_diff(run, tmp_path):
    p = write(tmp_path / "a.policy", UGLY)
    r = run("--diff", "a.policy")
    assert r.exit_code == 0
    assert read(p) == UGLY
    assert r.stdout.startswith("--- a/a.policy\n+++ b/a.policy\n")
    assert "-permit   agent to read on repo # why\n" in r.stdout
    assert "+permit agent to read on repo  # why\n" in r.stdout
    assert "+  when a == b\n" in r.stdout
    # with --check as well: the diff and exit 1
    r = run("--check", "--diff", "a.policy")
    assert r.exit_code == 1 and "+  when a == b" in r.stdout
    assert read(p) == UGLY


def test_diff_marks_a_missing_final_newline(run, tmp_path):
    write(tmp_path / "a.policy", "const X = 1")
    r = run("--diff", "a.policy")
    assert "-const X = 1\n\\ No newline at end of file\n+const X = 1\n" in r.stdout


def test_parse_error_leaves_file_unchanged(run, tmp_path):
    bad = write(tmp_path / "bad.policy", BAD)
    good = write(tmp_path / "good.policy", UGLY)
    r = run("bad.policy", "good.policy")
    assert r.exit_code == 1
    assert read(bad) == BAD
    assert read(good) == PRETTY  # the other files are still formatted
    assert "bad.policy:2:13: error[E001]: unexpected '=='; expected an expression" in r.stderr
    assert "  when a == == b\n            ^^\n" in r.stderr  # the source line and a caret
    assert "Traceback" not in r.output


def test_parse_error_under_check_and_diff(run, tmp_path):
    write(tmp_path / "bad.policy", BAD)
    for flag in ("--check", "--diff"):
        r = run(flag, "bad.policy")
        assert r.exit_code == 1 and "error[E001]" in r.stderr
    assert read(tmp_path / "bad.policy") == BAD


def test_directory_is_searched_recursively_in_sorted_order(run, tmp_path):
    write(tmp_path / "pol" / "b.policy", UGLY)
    write(tmp_path / "pol" / "a" / "z.policy", UGLY)
    write(tmp_path / "pol" / "a.policy", UGLY)
    write(tmp_path / "pol" / "notes.txt", UGLY)
    r = run("--check", "pol")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    want = [os.path.join("pol", "a", "z.policy"), os.path.join("pol", "a.policy"), os.path.join("pol", "b.policy")]
    assert lines == [f"would reformat {p}" for p in sorted(want)]
    for p in want:  # the printed paths open
        assert read(tmp_path / p) == UGLY
    assert run("pol").exit_code == 0
    assert read(tmp_path / "pol" / "a" / "z.policy") == PRETTY
    assert read(tmp_path / "pol" / "notes.txt") == UGLY


def test_directory_without_policies_says_so(run, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("empty")
    assert r.exit_code == 0
    assert r.stderr == "empty: no .policy files found\n"


def test_file_given_twice_is_formatted_once(run, tmp_path):
    write(tmp_path / "d" / "a.policy", UGLY)
    r = run("d", os.path.join("d", "a.policy"))
    assert r.exit_code == 0
    assert r.stderr.count("reformatted") == 1


def test_usage_errors_exit_2(run, tmp_path):
    r = run()
    assert r.exit_code == 2 and "Missing argument" in r.output
    r = run("does-not-exist.policy")
    assert r.exit_code == 2 and "does not exist" in r.output
    write(tmp_path / "a.policy", UGLY)
    r = run("--frobnicate", "a.policy")
    assert r.exit_code == 2
    assert read(tmp_path / "a.policy") == UGLY


def test_not_utf8_is_an_error_not_a_traceback(run, tmp_path):
    p = tmp_path / "latin.policy"
    p.write_bytes(b"const X = \"caf\xe9\"\n")
    r = run("latin.policy")
    assert r.exit_code == 1
    assert "latin.policy: error: not UTF-8" in r.stderr
    assert p.read_bytes() == b"const X = \"caf\xe9\"\n"


def test_unexpected_failure_is_reported_not_raised(run, tmp_path, monkeypatch):
    # anything the formatter did not expect is one line naming the file, never a traceback
    import policylang.language.formatter as f

    def boom(text, path="<policy>"):
        raise RuntimeError("unexpected")
    monkeypatch.setattr(f, "format_source", boom)
    src = "const X = 1\n"
    write(tmp_path / "odd.policy", src)
    r = run("odd.policy")
    assert r.exit_code == 1
    assert r.stderr.startswith("odd.policy: error")
    assert "Traceback" not in r.stderr
    assert read(tmp_path / "odd.policy") == src


def test_over_long_literal_is_a_syntax_error(run, tmp_path):
    # a 5000-digit integer literal is E001 with its position, file untouched
    src = "const X = " + "9" * 5000 + "\n"
    write(tmp_path / "big.policy", src)
    r = run("big.policy")
    assert r.exit_code == 1
    assert r.stderr.startswith("big.policy:1:11: error[E001]")
    assert read(tmp_path / "big.policy") == src


def test_internal_error_leaves_file_unchanged(run, tmp_path, monkeypatch):
    import policylang.language.formatter as f

    monkeypatch.setattr(f, "format_tree", lambda tree, text: "const X = 2\n")
    write(tmp_path / "a.policy", "const X = 1\n")
    r = run("a.policy")
    assert r.exit_code == 1
    assert "a.policy: internal error" in r.stderr
    assert read(tmp_path / "a.policy") == "const X = 1\n"


def test_stdin_to_stdout(run):
    r = run("-", input=UGLY)
    assert r.exit_code == 0 and r.stdout == PRETTY
    r = run("--check", "-", input=UGLY)
    assert r.exit_code == 1 and r.stdout == "" and "would reformat <stdin>" in r.stderr
    r = run("--check", "-", input=PRETTY)
    assert r.exit_code == 0
    r = run("-", input=BAD)
    assert r.exit_code == 1 and "<stdin>:2:13: error[E001]" in r.stderr


def test_crlf_file_is_normalised(run, tmp_path):
    p = write(tmp_path / "a.policy", PRETTY.replace("\n", "\r\n"))
    r = run("--check", "a.policy")
    assert r.exit_code == 1
    assert run("a.policy").exit_code == 0
    assert read(p) == PRETTY


def test_write_failure_is_an_error(run, tmp_path, monkeypatch):
    import policylang.cli.fmt as fmt_cli

    p = write(tmp_path / "d" / "a.policy", UGLY)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fmt_cli.os, "replace", refuse)
    r = run("d")
    assert r.exit_code == 1
    assert r.stderr == f"{os.path.join('d', 'a.policy')}: error: cannot write: Permission denied\n"
    assert read(p) == UGLY
    assert [f.name for f in (tmp_path / "d").iterdir()] == ["a.policy"]  # the temporary file is gone
