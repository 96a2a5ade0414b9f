"""modelyard: local models behind OpenAI- and Anthropic-compatible HTTP APIs.

Installed, the server is `modelyard.router`, the backends
`modelyard.adapters`, the wire and config types `modelyard.schemas` and the
embedded configs `modelyard.configs` (see pyproject.toml: the repository
keeps those folders at its top level). Imported from a source checkout that
is not installed (`python -m modelyard.router.cli` at the repository root),
the same top-level folders are found beside this one.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "router" / "__init__.py").is_file():
    __path__.append(str(_checkout))
