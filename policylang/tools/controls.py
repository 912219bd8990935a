"""The control catalogues ``policylang report --controls`` maps rules to (docs/controls.md).

Three lists, as data, each with the address it was taken from:

- the OWASP Top 10 for Agentic Applications (2026): ASI01 … ASI10;
- the NIST AI Risk Management Framework 1.0 (NIST AI 100-1): its four functions and their
  19 categories (GOVERN 1 … MANAGE 4), with the number of subcategories of each so that a
  tag naming a subcategory (``MANAGE 2.4``) can be checked;
- CSA MAESTRO's seven layers (L1 Foundation Models … L7 Agent Ecosystem).

:func:`resolve_tag` reads an ``@tag`` value: it says whether the tag names a control
(which one), is a control tag that names nothing known (a diagnostic), or is an ordinary
tag (``@tag("jit")``), which the report ignores. The accepted spellings are in
docs/controls.md#tags. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Control:
    framework: str
    #: the canonical id: ``ASI03``, ``MANAGE 2``, ``MANAGE``, ``L3``
    id: str
    title: str
    #: the id of the enclosing control (a NIST category's function), or None
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class Framework:
    #: the key used in JSON and after ``--fail-on-uncovered``
    key: str
    name: str
    version: str
    source: str
    controls: tuple[Control, ...]
    #: tag prefixes (before ``:``) that name this framework, lower case
    prefixes: tuple[str, ...]

    def get(self, control_id: str) -> Control | None:
        return next((c for c in self.controls if c.id == control_id), None)


def _controls(key: str, rows) -> tuple[Control, ...]:
    return tuple(Control(key, cid, title, parent) for cid, title, parent in rows)


OWASP = Framework(
    key="owasp-agentic",
    name="OWASP Top 10 for Agentic Applications",
    version="2026",
    source="https://genai.owasp.org/resource/owasp-top-10-for-agentic-applications-for-2026/",
    controls=_controls("owasp-agentic", [
        ("ASI01", "Agent Goal Hijack", None),
        ("ASI02", "Tool Misuse and Exploitation", None),
        ("ASI03", "Identity and Privilege Abuse", None),
        ("ASI04", "Agentic Supply Chain Vulnerabilities", None),
        ("ASI05", "Unexpected Code Execution", None),
        ("ASI06", "Memory and Context Poisoning", None),
        ("ASI07", "Insecure Inter-Agent Communication", None),
        ("ASI08", "Cascading Failures", None),
        ("ASI09", "Human-Agent Trust Exploitation", None),
        ("ASI10", "Rogue Agents", None),
    ]),
    prefixes=("owasp-agentic", "owasp", "asi"),
)

#: NIST AI 100-1, Tables 1-4: category -> (title, number of subcategories)
_NIST_CATEGORIES: dict[str, list[tuple[str, int]]] = {
    "GOVERN": [
        (("Policies, processes, procedures, and practices across the organization related to the mapping, "
         "measuring, and managing of AI risks are in place, transparent, and implemented effectively"), 7),
        (("Accountability structures are in place so that the appropriate teams and individuals are empowered, "
         "responsible, and trained for mapping, measuring, and managing AI risks"), 3),
        (("Workforce diversity, equity, inclusion, and accessibility processes are prioritized in the mapping, "
         "measuring, and managing of AI risks throughout the lifecycle"), 2),
        ("Organizational teams are committed to a culture that considers and communicates AI risk", 3),
        ("Processes are in place for robust engagement with relevant AI actors", 2),
        (("Policies and procedures are in place to address AI risks and benefits arising from third-party "
         "software and data and other supply chain issues"), 2),
    ],
    "MAP": [
        ("Context is established and understood", 6),
        ("Categorization of the AI system is performed", 3),
        (("AI capabilities, targeted usage, goals, and expected benefits and costs compared with appropriate "
         "benchmarks are understood"), 5),
        (("Risks and benefits are mapped for all components of the AI system including third-party software "
         "and data"), 2),
        ("Impacts to individuals, groups, communities, organizations, and society are characterized", 2),
    ],
    "MEASURE": [
        ("Appropriate methods and metrics are identified and applied", 3),
        ("AI systems are evaluated for trustworthy characteristics", 13),
        ("Mechanisms for tracking identified AI risks over time are in place", 3),
        ("Feedback about efficacy of measurement is gathered and assessed", 3),
    ],
    "MANAGE": [
        (("AI risks based on assessments and other analytical output from the MAP and MEASURE functions are "
         "prioritized, responded to, and managed"), 4),
        (("Strategies to maximize AI benefits and minimize negative impacts are planned, prepared, implemented, "
         "documented, and informed by input from relevant AI actors"), 4),
        ("AI risks and benefits from third-party entities are managed", 2),
        (("Risk treatments, including response and recovery, and communication plans for the identified AI "
         "risks are documented and monitored regularly"), 3),
    ],
}
_NIST_FUNCTIONS = {
    "GOVERN": "A culture of risk management is cultivated and present",
    "MAP": "Context is recognized and risks related to context are identified",
    "MEASURE": "Identified risks are assessed, analyzed, or tracked",
    "MANAGE": "Risks are prioritized and acted upon based on a projected impact",
}
#: the abbreviations the NIST AI RMF Playbook uses
_NIST_ABBREVIATIONS = {"GV": "GOVERN", "MP": "MAP", "MS": "MEASURE", "MG": "MANAGE"}


def _nist_rows():
    for function, categories in _NIST_CATEGORIES.items():
        yield function, _NIST_FUNCTIONS[function], None
        for n, (title, _subs) in enumerate(categories, 1):
            yield f"{function} {n}", title, function


NIST = Framework(
    key="nist-ai-rmf",
    name="NIST AI Risk Management Framework",
    version="1.0 (NIST AI 100-1)",
    source="https://doi.org/10.6028/NIST.AI.100-1",
    controls=_controls("nist-ai-rmf", _nist_rows()),
    prefixes=("nist-ai-rmf", "nist"),
)

MAESTRO = Framework(
    key="maestro",
    name="CSA MAESTRO (Multi-Agent Environment, Security, Threat, Risk, and Outcome) layers",
    version="2025 (seven layers)",
    source="https://cloudsecurityalliance.org/blog/2025/02/06/agentic-ai-threat-modeling-framework-maestro",
    controls=_controls("maestro", [
        ("L1", "Foundation Models", None),
        ("L2", "Data Operations", None),
        ("L3", "Agent Frameworks", None),
        ("L4", "Deployment and Infrastructure", None),
        ("L5", "Evaluation and Observability", None),
        ("L6", "Security and Compliance", None),
        ("L7", "Agent Ecosystem", None),
    ]),
    prefixes=("csa-maestro", "maestro"),
)

FRAMEWORKS: tuple[Framework, ...] = (OWASP, NIST, MAESTRO)
BY_KEY: dict[str, Framework] = {f.key: f for f in FRAMEWORKS}
_BY_PREFIX: dict[str, Framework] = {p: f for f in FRAMEWORKS for p in f.prefixes}

#: spellings of OWASP agentic risks by name that earlier policies use (docs/controls.md#tags)
OWASP_ALIASES: dict[str, str] = {
    "agent-goal-hijack": "ASI01", "goal-hijack": "ASI01", "prompt-injection": "ASI01",
    "tool-misuse": "ASI02", "tool-misuse-and-exploitation": "ASI02", "excessive-agency": "ASI02",
    "identity-and-privilege-abuse": "ASI03", "identity": "ASI03", "privilege-compromise": "ASI03",
    "least-privilege": "ASI03",
    "agentic-supply-chain": "ASI04", "supply-chain": "ASI04",
    "unexpected-code-execution": "ASI05", "code-execution": "ASI05",
    "memory-and-context-poisoning": "ASI06", "memory-poisoning": "ASI06", "context-poisoning": "ASI06",
    "insecure-inter-agent-communication": "ASI07", "inter-agent-communication": "ASI07",
    "cascading-failures": "ASI08", "resource-overload": "ASI08",
    "human-agent-trust-exploitation": "ASI09", "human-in-the-loop": "ASI09",
    "rogue-agents": "ASI10", "rogue-agent": "ASI10",
}

MAESTRO_ALIASES: dict[str, str] = {
    "foundation-models": "L1", "data-operations": "L2", "agent-frameworks": "L3",
    "deployment-and-infrastructure": "L4", "deployment-infrastructure": "L4",
    "evaluation-and-observability": "L5", "security-and-compliance": "L6", "agent-ecosystem": "L7",
}


@dataclass(frozen=True, slots=True)
class TagMeaning:
    """What an ``@tag`` value means for the report.

    ``kind`` is ``control`` (``control`` is set), ``unknown`` (a control tag naming no
    known control: ``problem`` says why) or ``other`` (not a control tag; ignored)."""

    kind: str
    control: Control | None = None
    problem: str | None = None


_OTHER = TagMeaning("other")
_ASI = re.compile(r"(?:ASI|A)?[ _-]?0*(\d{1,3})", re.IGNORECASE)
_NIST_ID = re.compile(r"([A-Z]+)(?:[ _.-]*(\d{1,3})(?:\.(\d{1,3}))?)?", re.IGNORECASE)
_LAYER = re.compile(r"(?:L|LAYER)?[ _-]?(\d{1,3})", re.IGNORECASE)


def shown_tag(text: str) -> str:
    """A tag value as a message quotes it: at most 60 characters."""
    return text if len(text) <= 60 else text[:57] + "…"


def _slug(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def _owasp(value: str) -> TagMeaning:
    m = _ASI.fullmatch(value.strip())
    if m:
        cid = f"ASI{int(m.group(1)):02d}"
        control = OWASP.get(cid)
        if control is not None:
            return TagMeaning("control", control)
        return TagMeaning("unknown", problem=f"'{shown_tag(value)}' is not an OWASP Top 10 for Agentic Applications risk "
                                             f"(they are ASI01 to ASI10)")
    alias = OWASP_ALIASES.get(_slug(value))
    if alias:
        return TagMeaning("control", OWASP.get(alias))
    hint = _close(_slug(value), list(OWASP_ALIASES))
    return TagMeaning("unknown", problem=f"'{shown_tag(value)}' names no OWASP Top 10 for Agentic Applications risk "
                                         f"(write ASI01 to ASI10{_did_you_mean(hint)})")


def _nist(value: str) -> TagMeaning:
    m = _NIST_ID.fullmatch(value.strip())
    if m:
        function = m.group(1).upper()
        function = _NIST_ABBREVIATIONS.get(function, function)
        if function in _NIST_CATEGORIES:
            if m.group(2) is None:
                return TagMeaning("control", NIST.get(function))
            categories = _NIST_CATEGORIES[function]
            n = int(m.group(2))
            if not 1 <= n <= len(categories):
                return TagMeaning("unknown", problem=f"NIST AI RMF {function} has categories {function} 1 to "
                                                     f"{function} {len(categories)}, not {function} {n}")
            if m.group(3) is not None:
                sub, subs = int(m.group(3)), categories[n - 1][1]
                if not 1 <= sub <= subs:
                    return TagMeaning("unknown", problem=f"NIST AI RMF {function} {n} has subcategories "
                                                         f"{function} {n}.1 to {function} {n}.{subs}, "
                                                         f"not {function} {n}.{sub}")
            return TagMeaning("control", NIST.get(f"{function} {n}"))
    hint = _close(value.strip().split(" ")[0].split("-")[0].upper(), list(_NIST_CATEGORIES))
    return TagMeaning("unknown", problem=f"'{shown_tag(value)}' names no NIST AI RMF function or category (write GOVERN, "
                                         f"MAP, MEASURE or MANAGE, optionally with a category: MANAGE-2"
                                         f"{_did_you_mean(hint)})")


def _maestro(value: str) -> TagMeaning:
    m = _LAYER.fullmatch(value.strip())
    if m:
        control = MAESTRO.get(f"L{int(m.group(1))}")
        if control is not None:
            return TagMeaning("control", control)
        return TagMeaning("unknown", problem=f"'{shown_tag(value)}' is not a MAESTRO layer (they are L1 to L7)")
    alias = MAESTRO_ALIASES.get(_slug(value))
    if alias:
        return TagMeaning("control", MAESTRO.get(alias))
    hint = _close(_slug(value), list(MAESTRO_ALIASES))
    return TagMeaning("unknown", problem=f"'{shown_tag(value)}' names no MAESTRO layer (write L1 to L7{_did_you_mean(hint)})")


_RESOLVERS = {"owasp-agentic": _owasp, "nist-ai-rmf": _nist, "maestro": _maestro}


#: longer values get no "did you mean" (difflib is quadratic in the length)
_HINT_MAX = 64


def _close(word: str, candidates, **kw) -> list[str]:
    return difflib.get_close_matches(word, candidates, n=1, **kw) if len(word) <= _HINT_MAX else []


def _did_you_mean(hint: list[str]) -> str:
    return f"; did you mean '{hint[0]}'?" if hint else ""


def resolve_tag(value: str) -> TagMeaning:
    """The meaning of one ``@tag`` value (docs/controls.md#tags).

    ``<prefix>:<id>`` with a framework prefix (``owasp:``, ``owasp-agentic:``, ``asi:``,
    ``nist:``, ``nist-ai-rmf:``, ``maestro:``, ``csa-maestro:``; any case) is a control
    tag; so is a bare OWASP id (``ASI03``). Anything else is an ordinary tag.
    """
    if not isinstance(value, str):
        return _OTHER
    prefix, sep, rest = value.partition(":")
    if sep:
        framework = _BY_PREFIX.get(prefix.strip().lower())
        if framework is None:
            return _OTHER
        if not rest.strip():
            return TagMeaning("unknown", problem=f"'{shown_tag(value)}' names no control after '{shown_tag(prefix)}:'")
        return _RESOLVERS[framework.key](rest)
    if re.fullmatch(r"ASI[ _-]?\d+", value.strip(), re.IGNORECASE):
        return _owasp(value)
    return _OTHER


def close_prefix(value: str) -> str | None:
    """A framework prefix close to the one ``value`` is written with (``owsap:ASI01``),
    when it has a prefix that is not a framework's; else None."""
    prefix, sep, _rest = value.partition(":")
    if not sep or prefix.strip().lower() in _BY_PREFIX:
        return None
    hint = _close(prefix.strip().lower(), list(_BY_PREFIX), cutoff=0.75)
    return hint[0] if hint else None


def resolve_control(text: str) -> Control | None:
    """A control named on the command line (``--fail-on-uncovered``): a tag value as
    above, or a canonical id of any framework (``ASI03``, ``MANAGE 2``, ``L3``)."""
    meaning = resolve_tag(text)
    if meaning.kind == "control":
        return meaning.control
    if meaning.kind == "unknown":
        return None
    for resolver in (_nist, _maestro):
        meaning = resolver(text)
        if meaning.kind == "control":
            return meaning.control
    return None
