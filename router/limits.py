"""Bounds on what a request may ask of a model, checked in the router before
any grammar is built, any prompt is tokenized or any worker sees the request.

A ~200-byte schema can make llama.cpp unroll a billion grammar rules, and
100,000 short messages keep a worker rendering its chat template for
minutes; neither can be stopped once the worker has started. So schemas,
grammars and prompts are measured here, in plain Python and in time linear
in the request's size, against `[limits]` in the config, and refused with a
400 that names the keyword, its path in the request, the limit and the
config key that raises it. Text that is not valid Unicode (a lone
surrogate) is refused here too: it cannot be encoded for the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from modelyard.adapters.base import ChatRequest, Constraint, ToolCalling
from modelyard.router.errors import APIError, invalid_request, json_type_of
from modelyard.schemas.config import LimitsConfig
from pydantic import BaseModel
from starlette.requests import Request

REPEAT_KEYWORDS = ("maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties")
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
# Keywords whose value is one schema (JSON Schema also allows true/false there).
SUBSCHEMA_ONE = ("additionalProperties", "not", "if", "then", "else", "contains", "propertyNames", "additionalItems")
STRING_KEYWORDS = ("pattern", "format", "$ref")

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# GBNF tokens that matter for the bounds: literals and character classes
# (skipped whole, so parentheses inside them do not count), comments,
# parentheses, `::=` and `{m,n}` repetitions.
GBNF_TOKEN = re.compile(
    r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|::=|[()]|\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}', re.DOTALL
)
# `{m,n}` in a regex `pattern` (llama-cpp-python's converter unrolls it too).
PATTERN_REPEAT = re.compile(r"(?<!\\)\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def limits_for(request: Request) -> LimitsConfig:
    """The `[limits]` of the config in force."""
    limits: LimitsConfig = request.app.state.yard.generation.loaded.config.limits
    return limits


def over_limit(param: str, what: str, limit: int, key: str) -> APIError:
    return invalid_request(
        f"{param}: {what}; this server allows at most {limit}. "
        f"The server's operator can raise the limit with `{key}` in the [limits] table of the config.",
        param=param,
        code="limit_exceeded",
    )


def bad_schema(param: str, what: str) -> APIError:
    return invalid_request(f"{param} is not a valid JSON Schema: {what}.", param=param, code="invalid_schema")


def big_number(digits: str) -> int:
    """A decimal bound; more than 18 digits is simply 'huge' (Python refuses
    to convert numbers of over 4,300 digits)."""
    return int(digits) if len(digits) <= 18 else 10**18


# --- text ------------------------------------------------------------------


def lone_surrogate_in(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a lone UTF-16 surrogate
    such as "\\ud800": JSON may carry one, UTF-8 cannot encode it."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and LONE_SURROGATE.search(item):
                return where
        elif isinstance(item, BaseModel):
            fields = type(item).model_fields
            children = [(getattr(item, name), field.alias or name) for name, field in fields.items()]
            children += list((item.model_extra or {}).items())
            stack.extend((child, f"{where}.{name}" if where else name) for child, name in reversed(children))
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                here = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and not key.isascii() and LONE_SURROGATE.search(key):
                    return where or here
                stack.append((child, here))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{where}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None


def reject_lone_surrogates(body: Any) -> None:
    where = lone_surrogate_in(body)
    if where is not None:
        raise invalid_request(
            f"{where} contains a lone surrogate (a code point between U+D800 and U+DFFF without its pair), "
            "which is not valid Unicode text.",
            param=where,
            code="invalid_unicode",
        )


# --- prompts -----------------------------------------------------------------


def check_message_count(count: int, limits: LimitsConfig, param: str) -> None:
    if count > limits.max_messages:
        raise over_limit(param, f"the request has {count:,} messages", limits.max_messages, "max_messages")


def check_prompt_chars(chars: int, limits: LimitsConfig, param: str, attached_files: list[str] | None = None) -> None:
    if chars > limits.max_prompt_chars:
        files = f" (the attached files {', '.join(repr(n) for n in attached_files)} included)" if attached_files else ""
        raise over_limit(
            param, f"the prompt has {chars:,} characters of text{files}", limits.max_prompt_chars, "max_prompt_chars"
        )


def message_chars(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # text and image parts: images are held to their own limits (router/image_inputs.py)
            total += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
        else:
            total += len(content)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments") or ""
            total += len(function.get("name") or "") + (len(arguments) if isinstance(arguments, str) else len(json.dumps(arguments)))
    return total


def check_prompt(chat: ChatRequest, limits: LimitsConfig, param: str) -> None:
    """Message count and text size of a chat prompt (tool definitions join
    the system prompt; the text of attached files is in the messages)."""
    check_message_count(len(chat.messages), limits, param)
    chars = message_chars(chat.messages)
    if chat.tools is not None:
        chars += len(json.dumps(chat.tools.tools, ensure_ascii=False))
    check_prompt_chars(chars, limits, param, chat.attached_files)


# --- JSON Schemas --------------------------------------------------------------


def walk_json(value: Any, path: str) -> Iterator[tuple[Any, str, int]]:
    """Every value of a JSON document with its path and nesting depth, without recursion."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        yield item, where, depth
        if isinstance(item, dict):
            stack.extend((child, f"{where}.{key}", depth + 1) for key, child in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]", depth + 1) for index, child in reversed(list(enumerate(item))))


def check_schema_depth(schema: Any, path: str, limits: LimitsConfig) -> None:
    """Nesting of the whole document, annotations and enum values included:
    all of it is pickled to the worker and walked by the grammar compiler."""
    for _, where, depth in walk_json(schema, path):
        if depth > limits.max_schema_depth:
            raise over_limit(
                where, f"the schema nests objects and arrays {depth} levels deep here", limits.max_schema_depth, "max_schema_depth"
            )


def check_pattern(pattern: str, where: str, limits: LimitsConfig) -> None:
    for match in PATTERN_REPEAT.finditer(pattern):
        for digits in match.groups():
            if digits and big_number(digits) > limits.max_repeat:
                raise over_limit(where, f"the pattern repeats {{{digits}}} times", limits.max_repeat, "max_repeat")
    depth = deepest = 0
    for char in pattern:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > limits.max_grammar_depth:
        raise over_limit(where, f"the pattern nests {deepest} groups", limits.max_grammar_depth, "max_grammar_depth")


def check_keywords(schema: dict[str, Any], where: str, limits: LimitsConfig, literals: list[int]) -> list[tuple[Any, str]]:
    """Check one schema object's keywords; return its subschemas with their paths."""
    subschemas: list[tuple[Any, str]] = []
    for key, value in schema.items():
        here = f"{where}.{key}"
        if key in REPEAT_KEYWORDS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad_schema(here, f"{key} must be a non-negative integer, not {json_type_of(value)}")
            if value > limits.max_repeat:
                raise over_limit(here, f"{key} is {value:,}", limits.max_repeat, "max_repeat")
        elif key in SUBSCHEMA_MAPS:
            if not isinstance(value, dict):
                raise bad_schema(here, f"{key} must be an object mapping names to schemas, not {json_type_of(value)}")
            if key == "properties" and len(value) > limits.max_object_properties:
                raise over_limit(
                    here, f"the object has {len(value):,} properties", limits.max_object_properties, "max_object_properties"
                )
            subschemas += [(sub, f"{here}.{name}") for name, sub in value.items()]
        elif key in SUBSCHEMA_LISTS:
            if not isinstance(value, list):
                raise bad_schema(here, f"{key} must be an array of schemas, not {json_type_of(value)}")
            subschemas += [(sub, f"{here}[{index}]") for index, sub in enumerate(value)]
        elif key == "items":
            if isinstance(value, list):
                subschemas += [(sub, f"{here}[{index}]") for index, sub in enumerate(value)]
            else:
                subschemas.append((value, here))
        elif key in SUBSCHEMA_ONE:
            subschemas.append((value, here))
        elif key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or not all(isinstance(name, str) for name in names):
                raise bad_schema(here, "type must be a type name or an array of type names")
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
                raise bad_schema(here, "required must be an array of property names")
        elif key == "enum":
            if not isinstance(value, list):
                raise bad_schema(here, f"enum must be an array, not {json_type_of(value)}")
            if len(value) > limits.max_enum_values:
                raise over_limit(here, f"the enum has {len(value):,} values", limits.max_enum_values, "max_enum_values")
            literals[0] += len(json.dumps(value, ensure_ascii=False))
        elif key == "const":
            literals[0] += len(json.dumps(value, ensure_ascii=False))
        elif key in STRING_KEYWORDS:
            if not isinstance(value, str):
                raise bad_schema(here, f"{key} must be a string, not {json_type_of(value)}")
            if key == "pattern":
                check_pattern(value, here, limits)
        if literals[0] > limits.max_grammar_bytes:
            raise over_limit(
                here, f"the schema's enum and const values come to over {literals[0]:,} bytes",
                limits.max_grammar_bytes, "max_grammar_bytes",
            )  # fmt: skip
    return subschemas


def check_schema(schema: Any, path: str, limits: LimitsConfig, seen: int = 0) -> int:
    """Check one JSON Schema; returns the number of (sub)schemas seen so far,
    `seen` counting those of earlier schemas in the same request."""
    check_schema_depth(schema, path, limits)
    literals = [0]
    pending: list[tuple[Any, str]] = [(schema, path)]
    while pending:
        sub, where = pending.pop()
        if isinstance(sub, bool) and where != path:
            continue  # true / false: anything / nothing
        if not isinstance(sub, dict):
            raise bad_schema(where, f"a schema must be an object, not {json_type_of(sub)}")
        seen += 1
        if seen > limits.max_schema_nodes:
            raise over_limit(
                where, f"this is schema number {seen:,} of the request", limits.max_schema_nodes, "max_schema_nodes"
            )
        pending += reversed(check_keywords(sub, where, limits, literals))
    return seen


def check_schemas(schemas: list[tuple[Any, str]], limits: LimitsConfig) -> None:
    """Schemas that end up in one grammar: each checked, and their subschemas counted together."""
    seen = 0
    for schema, path in schemas:
        seen = check_schema(schema, path, limits, seen)


# --- GBNF grammars ---------------------------------------------------------------


def check_grammar(grammar: str, limits: LimitsConfig, param: str = "grammar") -> None:
    size = len(grammar.encode("utf-8", "surrogatepass"))
    if size > limits.max_grammar_bytes:
        raise over_limit(param, f"the grammar is {size:,} bytes", limits.max_grammar_bytes, "max_grammar_bytes")
    depth = deepest = rules = 0
    for match in GBNF_TOKEN.finditer(grammar):
        token = match.group()
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth = max(depth - 1, 0)
        elif token == "::=":
            rules += 1
        elif token.startswith("{"):
            for digits in match.groups():
                if digits and big_number(digits) > limits.max_repeat:
                    raise over_limit(param, f"the grammar repeats {token}", limits.max_repeat, "max_repeat")
    if deepest > limits.max_grammar_depth:
        raise over_limit(param, f"the grammar nests parentheses {deepest:,} deep", limits.max_grammar_depth, "max_grammar_depth")
    if rules > limits.max_grammar_rules:
        raise over_limit(param, f"the grammar has {rules:,} rules", limits.max_grammar_rules, "max_grammar_rules")


# --- one chat request ---------------------------------------------------------------


def check_constraint(constraint: Constraint | None, limits: LimitsConfig, schema_param: str) -> None:
    if constraint is None:
        return
    if constraint.gbnf is not None:
        check_grammar(constraint.gbnf, limits)
    elif constraint.json_schema is not None:
        check_schemas([(constraint.json_schema, schema_param)], limits)


def check_tools(tools: ToolCalling | None, limits: LimitsConfig, parameters_param: str) -> None:
    """Tool parameter schemas, which become one grammar; `parameters_param`
    is the path of a tool's schema with `{}` for its index."""
    if tools is None:
        return
    schemas = [
        (tool["function"]["parameters"], parameters_param.format(index))
        for index, tool in enumerate(tools.tools)
        if (tool.get("function") or {}).get("parameters") is not None
    ]
    check_schemas(schemas, limits)


def check_chat_request(
    chat: ChatRequest, limits: LimitsConfig, *, prompt_param: str, schema_param: str, parameters_param: str
) -> None:
    """What a chat-like surface (chat completions, Responses) checks once it
    has built the backend request: the prompt, the output schema or grammar,
    the tools' parameter schemas; each named by its path in the surface's request."""
    check_prompt(chat, limits, prompt_param)
    check_constraint(chat.constraint, limits, schema_param)
    check_tools(chat.tools, limits, parameters_param)
