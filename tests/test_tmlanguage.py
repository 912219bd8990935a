"""The TextMate grammar for .policy files (policylang/editors/policylang.tmLanguage.json,
docs/editors.md): valid JSON, every keyword of the parser highlighted, and a sample file's
tokens given the scopes an editor colours them by.

The patterns are run by a tiny TextMate-style tokenizer (leftmost match wins, ties to the
first pattern; ``begin``/``end`` regions with their inner patterns), with Python's ``re``:
the grammar keeps to the regex syntax Oniguruma and Python share.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from policylang.language.parser import CONTEXTUAL, KEYWORDS

GRAMMAR = Path(__file__).resolve().parent.parent / "policylang" / "editors" / "policylang.tmLanguage.json"


@pytest.fixture(scope="module")
def grammar() -> dict:
    return json.loads(GRAMMAR.read_text())


def _flatten(patterns: list, repo: dict) -> list[dict]:
    out = []
    for p in patterns:
        if "include" in p:
            out += _flatten([repo[p["include"].lstrip("#")]], repo)
        elif "patterns" in p and "match" not in p and "begin" not in p:
            out += _flatten(p["patterns"], repo)
        else:
            out.append(p)
    return out


def tokenize(grammar: dict, line: str) -> list[tuple[str, str]]:
    """(text, scope) for each highlighted token of one line."""
    repo = grammar["repository"]
    top = _flatten(grammar["patterns"], repo)
    tokens = []
    pos = 0
    while pos < len(line):
        best = None
        for p in top:
            m = re.compile(p.get("match") or p["begin"], re.MULTILINE).search(line, pos)
            if m and m.end() > m.start() and (best is None or m.start() < best[1].start()):
                best = (p, m)
        if best is None:
            break
        p, m = best
        if "begin" in p:
            # inside the region: the end pattern and the inner patterns, leftmost first
            # (the end pattern wins a tie, as in TextMate), until the end matches
            inner = _flatten(p.get("patterns", []), repo)
            start, at = m.start(), m.end()
            while True:
                end = re.compile(p["end"]).search(line, at)
                hit = None
                for ip in inner:
                    im = re.compile(ip["match"]).search(line, at)
                    if im and (hit is None or im.start() < hit[1].start()):
                        hit = (ip, im)
                if hit is not None and (end is None or hit[1].start() < end.start()):
                    tokens.append((hit[1].group(), hit[0]["name"]))
                    at = hit[1].end()
                    continue
                stop = end.end() if end else len(line)
                break
            tokens.append((line[start:stop], p["name"]))
            pos = stop
            continue
        if "captures" in p:
            for group, cap in p["captures"].items():
                if m.group(int(group)) is not None:
                    tokens.append((m.group(int(group)), cap["name"]))
        else:
            tokens.append((m.group(), p["name"]))
        pos = m.end()
    return tokens


def test_the_grammar_is_valid_json_for_policy_files(grammar):
    assert grammar["scopeName"] == "source.policylang"
    assert grammar["fileTypes"] == ["policy"]
    for p in _flatten(grammar["patterns"], grammar["repository"]):
        re.compile(p.get("match") or p["begin"])  # every pattern compiles


def test_every_keyword_of_the_parser_is_highlighted(grammar):
    for word in sorted(KEYWORDS | CONTEXTUAL):
        scopes = [s for t, s in tokenize(grammar, f"x {word} y") if t == word]
        assert scopes, f"keyword {word!r} is not highlighted"
        assert scopes[0].startswith(("keyword.", "constant.language", "storage.modifier")), (word, scopes)


SAMPLE = '''\
# a comment with permit in it
principal agent authoritative { region: string, trust: number? }
high_impact action deploy on service { env: string }
const PROD = ["prod", "prod-eu"]
@id("agents-deploy")
@tag("jit")
require approval for agent to deploy on service
  when principal.trust >= 0.5 and not (resource.env in PROD)
  unless risk.score > 0.9
  grant "deploy:" + resource.id for 1h30m
  because "say \\"why\\""
'''


def test_a_sample_files_tokens_get_their_scopes(grammar):
    tokens = [tokenize(grammar, line) for line in SAMPLE.splitlines()]
    flat = [tok for line in tokens for tok in line]

    def scope(text: str, nth: int = 0) -> str:
        return [s for t, s in flat if t == text][nth]

    assert tokens[0] == [("# a comment with permit in it", "comment.line.number-sign.policylang")]
    assert scope("principal").startswith("keyword.other.declaration")
    assert scope("agent") == "entity.name.type.policylang"
    assert scope("authoritative") == "storage.modifier.policylang"
    assert scope("string") == "support.type.policylang"
    assert scope("high_impact") == "storage.modifier.policylang"
    assert scope("PROD") == "variable.other.constant.policylang"
    assert scope('"prod"') == "string.quoted.double.policylang"
    assert scope("@") == "punctuation.definition.annotation.policylang"
    assert scope("id") == "storage.type.annotation.policylang"
    assert scope("tag") == "storage.type.annotation.policylang"
    assert scope("require") == "keyword.control.effect.policylang"
    assert scope("when") == "keyword.control.clause.policylang"
    assert scope("principal", 1) == "variable.language.root.policylang"
    assert scope(">=") == "keyword.operator.policylang"
    assert scope("0.5") == "constant.numeric.policylang"
    assert scope("1h30m") == "constant.numeric.duration.policylang"
    assert scope("and") == "keyword.operator.word.policylang"
    assert scope("risk") == "variable.language.root.policylang"
    assert ('\\"', "constant.character.escape.policylang") in flat
    # a keyword inside a string stays part of the string
    assert not any(t == "for" and s.startswith("keyword") for t, s in tokenize(grammar, 'because "for you"'))
