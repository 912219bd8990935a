"""Guards that put policylang in front of tool calls (docs/agents.md).

* :mod:`policylang.integrations.guard`: the framework-neutral core — the decorator for
  plain functions, the task scope, and the request-building and outcome-handling that
  every adapter shares;
* :mod:`policylang.integrations.langchain`: LangChain tools (``pip install
  'policylang[langchain]'``);
* :mod:`policylang.integrations.openai_agents`: OpenAI Agents SDK function tools
  (``pip install 'policylang[openai-agents]'``).

Importing this package imports none of them (and ``import policylang`` imports no
integration at all); import the module you use.
"""
