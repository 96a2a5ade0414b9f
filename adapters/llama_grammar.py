"""Grammars for llama.cpp's sampler: JSON Schemas (structured output, tool
parameters) compiled to GBNF by llama-cpp-python's public compiler, refused
when they use keywords it would silently ignore, and the grammar of a tool
call's body."""

from __future__ import annotations

import json
from typing import Any

from modelyard.adapters import tools as toolkit
from modelyard.adapters.base import InvalidRequestError, ToolCalling

# What llama-cpp-python's JSON Schema → grammar compiler enforces, and
# keywords that only annotate. Anything else would be silently ignored, so a
# schema using it is refused rather than half-enforced.
ENFORCED_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength",
}  # fmt: skip
ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly", "strict"}
SUBSCHEMA_MAPS = {"properties", "$defs", "definitions"}
SUBSCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems"}


def unenforced_keywords(schema: Any, where: str = "") -> list[str]:
    found: list[str] = []
    if not isinstance(schema, dict):
        return found
    for key, value in schema.items():
        here = f"{where}.{key}" if where else key
        if key not in ENFORCED_KEYWORDS | ANNOTATIONS:
            found.append(f"'{key}' (at {here})")
        elif key == "$ref" and not str(value).startswith("#"):
            found.append(f"'$ref' to {value} (at {here}; only local '#/...' references)")
        elif key in SUBSCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                found += unenforced_keywords(sub, f"{here}.{name}")
        elif key in SUBSCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                found += unenforced_keywords(sub, f"{here}[{index}]")
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            found += unenforced_keywords(value, here)
    return found


def schema_to_gbnf(schema: dict[str, Any], what: str, param: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    unenforced = unenforced_keywords(schema)
    if unenforced:
        raise InvalidRequestError(
            f"{what} uses JSON Schema keywords this server cannot enforce: {', '.join(unenforced)}", param
        )
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except (AssertionError, ValueError, KeyError, TypeError, NotImplementedError, RecursionError) as exc:
        # The compiler reports what it cannot handle with asserts and ValueErrors.
        raise InvalidRequestError(f"{what} uses a JSON Schema feature this server cannot enforce: {exc}", param) from None
    # llama-cpp-python's compiler lets a string hold raw control characters
    # (a newline), which JSON does not: a model's output, or a tool call, then
    # fails to parse. llama.cpp's own compiler leaves them out, as here.
    return grammar.replace(LOOSE_STRING_CHAR, JSON_STRING_CHAR)


LOOSE_STRING_CHAR = r'char ::= [^"\\] |'
JSON_STRING_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def tool_call_grammar(tools: ToolCalling) -> str:
    """GBNF for what follows `<tool_call>`: one call's JSON and `</tool_call>`,
    then, with parallel calls, more calls or the end."""
    try:
        call = schema_to_gbnf(toolkit.call_schema(tools), "a tool's parameters", "tools")
    except InvalidRequestError:
        strict = [f["name"] for f in toolkit.functions(tools) if f.get("strict")]
        if strict:
            raise
        call = schema_to_gbnf(toolkit.call_schema(tools, loose_arguments=True), "a tool's parameters", "tools")
    call = call.replace("root ::=", "tc-call ::=", 1)
    one = '[ \\t\\n]* tc-call [ \\t\\n]* "</tool_call>"'
    more = ' ([ \\t\\n]* "<tool_call>" ' + one + ")*" if tools.parallel else ""
    return f"{call}\nroot ::= {one}{more}\n"
