"""Request body -> the features a decision reads: route, token estimate, needs, data class.

Classification fails closed by construction: it reads every string the body holds, in every field known or unknown
and the keys of every object, skipping only the route name in `model` (the upstream never sees it), and every number
of seven digits or more, as its digits. Content that cannot be read as text (images, audio, files, token ids) raises
the request to the policy's `classify.unreadable` class. The prompt estimate counts the same strings, so whatever the
upstream reads is budgeted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import InvalidRequest
from gateway.routing import detectors, encoded, windowed
from gateway.routing.policy.decide import CHOICE_FIELDS, MAX_CHOICES, MAX_TOKEN_FIELDS, Features
from gateway.routing.policy.model import Policy

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765
TEXT_FIELDS = {"chat": "messages", "completions": "prompt", "embeddings": "input", "responses": "input",
               "messages": "messages"}
# Top-level fields whose value the upstream never reads: the route name is replaced by the upstream's model.
NOT_READ = frozenset({"model"})
# Values that frame a message or part rather than say anything: TOKENS_PER_MESSAGE covers them in the estimate.
FRAMING = frozenset({"role", "type"})
IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})
# Parts whose payload is not text: what the detectors cannot see, by the part's type.
UNREADABLE_TYPES = {"image_url": "image", "input_image": "image", "image": "image", "input_audio": "audio",
                    "audio": "audio", "file": "file", "input_file": "file", "document": "file"}
# Past this many values in objects and arrays, a body is read from its JSON text (C speed) rather than walked.
WALK_LIMIT = 50_000
# The same parts as they appear in orjson's compact JSON: "type":"..." and a key holding an object or a string.
_ENCODED_IMAGE = re.compile(r'"type":"(?:image_url|input_image|image)"')
_ENCODED_UNREADABLE = re.compile(
    r'"type":"(image_url|input_image|image|input_audio|audio|file|input_file|document)"|"(image_url|input_audio|file_data)":[{"]'
)
# Bodies of more than this many bytes (or of no declared length) are classified in a worker thread: reading 10 MiB
# takes a tenth of a second or more, which the event loop must not spend while other requests (and /healthz) wait.
OFF_LOOP_BYTES = 256 * 1024
# Optional fields whose type routing depends on.
OPTIONS = frozenset({"tools", "functions", "response_format", "text", "stream_options"})
# Keys that carry such a payload even in an object with no (or another) type.
UNREADABLE_KEYS = {"image_url": "image", "input_audio": "audio", "file_data": "file"}
UNREADABLE_KEY_NAMES = frozenset(UNREADABLE_KEYS)  # one set to test each object against, not a keys view each time
# Numbers of this size or more are read as their digits: a card or phone number can ride as a JSON number too.
LONG_NUMBER = 1_000_000


class Content:
    """What a request gives the upstream to read: every string, and what could not be read as text."""

    __slots__ = ("chars", "images", "items", "texts", "token_ids", "unreadable")

    def __init__(self) -> None:  # by hand: a dataclass' default_factory costs twice as much, once a request
        self.texts: list[str] = []
        self.chars = 0
        self.items = 0
        self.images = 0
        self.token_ids = 0
        self.unreadable: str | None = None

    def prompt_tokens(self) -> int:
        """The prompt's estimated size: characters / 4, plus per message, per image and per token id."""
        return (self.chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * self.items + TOKENS_PER_IMAGE * self.images
                + self.token_ids)


def features(policy: Policy, tenant: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str]) -> Features:
    """Validate the fields routing depends on and describe the request; InvalidRequest names a bad param."""
    route = body.get("model")
    if not isinstance(route, str):
        raise InvalidRequest("'model' is required and must be a string", param="model")
    content = request_texts(endpoint, body)
    # Upstreams differ in which of two caps given they obey (litellm's translations take the last): the larger counts.
    max_tokens = _largest(body, MAX_TOKEN_FIELDS[endpoint])
    n = _largest(body, CHOICE_FIELDS[endpoint], MAX_CHOICES) or 1
    stream = body.get("stream", False)
    if stream.__class__ is not bool:
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    plain = OPTIONS.isdisjoint(body)  # no tools, no response format: most requests
    has_tools, wants_json = (False, False) if plain else (_has_tools(body), _wants_json(body))
    found = data_class(policy, tenant, headers, content) if policy.doc.data_classes else None
    # Positional: keywords to a class are gathered in a dict, twice the cost of the record itself.
    return Features(route, tenant, content.prompt_tokens(), endpoint, max_tokens, n, stream, has_tools, wants_json,
                    content.images > 0, found, headers)


def fits_on_loop(headers: Mapping[str, str]) -> bool:
    """Whether the body is declared small enough to classify on the event loop."""
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) <= OFF_LOOP_BYTES


async def features_of(policy: Policy, tenant: str, endpoint: str, body: dict[str, Any],
                      headers: Mapping[str, str]) -> Features:
    """features(), in a worker thread when the body is large (or its size was not declared), else right here."""
    if fits_on_loop(headers):
        return features(policy, tenant, endpoint, body, headers)
    return await asyncio.to_thread(features, policy, tenant, endpoint, body, headers)


def data_class(policy: Policy, tenant: str, headers: Mapping[str, str], content: Content) -> str | None:
    """The most sensitive of the tenant's floor, the declared header, unreadable content and every detector hit."""
    return explain_class(policy, tenant, headers, content)[0]


def explain_class(policy: Policy, tenant: str, headers: Mapping[str, str],
                  content: Content) -> tuple[str | None, str]:
    """The data class and what set it: "tenant floor", "header", "unreadable ...", "detector NAME" or "default"."""
    classes = policy.doc.data_classes
    if not classes:
        return None, "no data classes"
    names = list(classes)
    floor = policy.doc.tenants[tenant].data_class
    rank, why = (policy.class_rank[floor], "tenant floor") if floor else (0, "default")
    declared = headers.get(policy.doc.classify.header)
    if declared is not None:
        if declared not in classes:
            raise InvalidRequest(f"unknown data class '{declared}' (known: {', '.join(names)})",
                                 param=policy.doc.classify.header)
        if policy.class_rank[declared] > rank:
            rank, why = policy.class_rank[declared], "header"
    if content.unreadable is not None:
        unreadable = policy.class_rank.get(policy.doc.classify.unreadable or names[-1], len(names) - 1)
        if unreadable > rank:
            rank, why = unreadable, f"unreadable content ({content.unreadable})"
    text = "\n".join(content.texts) if policy.class_detectors else ""
    for group in policy.class_detectors:
        if group.rank <= rank:
            break
        fired = detectors.scan(group.detectors, text)
        if fired:
            rank, why = group.rank, f"detector {fired}"
            break
    return names[rank], why


def request_texts(endpoint: str, body: dict[str, Any]) -> Content:
    """Everything of a request the upstream reads, after validating the fields that carry it."""
    content = Content()
    field_name = TEXT_FIELDS[endpoint]
    if field_name not in body:
        raise InvalidRequest(f"'{field_name}' is required", param=field_name)
    value = body[field_name]
    if endpoint in ("chat", "messages"):
        content.items = _messages(value)
    elif endpoint == "responses":
        content.items = _items(value)
    else:
        content.items, content.token_ids = _prompts(value, field_name)
        if content.token_ids:
            content.unreadable = "token ids"
    if endpoint != "messages":  # the Messages API's own fields are checked where they are translated
        _check_options(body)
    if not _walk(body, field_name, content):
        _read_encoded(body, content)
    return content


def _walk(body: dict[str, Any], field_name: str, content: Content) -> bool:
    """Gather every string, object key and long number of body into content, and note parts that are not text;
    False, leaving content to be read otherwise, once the body holds more than WALK_LIMIT values in objects and arrays.

    The estimate counts every string but the framing a message's overhead covers: keys inside the messages (or
    prompt, or input) and `role` and `type` values. Keys elsewhere (tool parameter schemas, say) are counted.
    """
    add, left = content.texts.append, WALK_LIMIT
    chars, stack = _top(body, field_name, add)
    while stack:
        value, keys_count = stack.pop()
        left -= len(value)
        if left < 0:
            return False
        if value.__class__ is dict:
            part = value.get("type")
            if (part.__class__ is str and part in UNREADABLE_TYPES) or not UNREADABLE_KEY_NAMES.isdisjoint(value):
                _note_part(value, content)
            for key, inner in value.items():
                add(key)
                if keys_count:
                    chars += len(key)
                kind = inner.__class__
                if kind is str:
                    add(inner)
                    if key not in FRAMING:
                        chars += len(inner)
                elif kind is dict or kind is list:
                    stack.append((inner, keys_count))
                elif (kind is int or kind is float) and not -LONG_NUMBER < inner < LONG_NUMBER:
                    add(repr(inner))
        else:
            for inner in value:
                kind = inner.__class__
                if kind is str:
                    add(inner)
                    chars += len(inner)
                elif kind is dict or kind is list:
                    stack.append((inner, keys_count))
                elif (kind is int or kind is float) and not -LONG_NUMBER < inner < LONG_NUMBER:
                    add(repr(inner))
    content.chars = chars
    return True


def _top(body: dict[str, Any], field_name: str, add: Callable[[str], None]) -> tuple[int, list[tuple[Any, bool]]]:
    """Gather the body's own keys, strings and long numbers; their characters, and the containers left to walk
    (with whether their keys count in the estimate: all but those of the text field)."""
    chars = 0
    stack: list[tuple[Any, bool]] = []
    for key, inner in body.items():  # orjson makes exact types: a class check is cheaper than isinstance
        add(key)
        kind = inner.__class__
        if kind is str:
            if key not in NOT_READ:
                add(inner)
                chars += len(inner)
        elif kind is dict or kind is list:
            stack.append((inner, key != field_name))
        elif (kind is int or kind is float) and not -LONG_NUMBER < inner < LONG_NUMBER:
            add(repr(inner))
    return chars, stack


def _read_encoded(body: dict[str, Any], content: Content) -> None:
    """Read a body too big to walk in Python as its JSON text: every key and string in it (the detectors decode
    its escapes), unreadable parts found by their JSON, and every character counted in the estimate."""
    text = encoded.text(body)
    content.texts, content.chars = [text], len(text)
    content.images = sum(1 for _ in windowed.finditer(_ENCODED_IMAGE, text))
    found = next(windowed.finditer(_ENCODED_UNREADABLE, text), None)
    if found is not None and content.unreadable is None:
        kind, key = found.groups()
        content.unreadable = UNREADABLE_TYPES[kind] if kind else UNREADABLE_KEYS[key]
    if content.unreadable == "image":
        content.images = max(content.images, 1)


def _note_part(part: dict[str, Any], content: Content) -> None:
    """Count an image and note unreadable content when part is one (by its type, or by a key that carries it)."""
    kind = part.get("type")
    what = UNREADABLE_TYPES.get(kind) if isinstance(kind, str) else None
    for key, carried in UNREADABLE_KEYS.items():
        payload = part.get(key)
        if isinstance(payload, str) or (isinstance(payload, dict) and ("url" in payload or "data" in payload)):
            what = what or carried
    if what is None:
        return
    content.unreadable = content.unreadable or what
    if what == "image":
        content.images += 1


def _messages(messages: Any) -> int:
    """Validate chat messages; return how many there are."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
        content = message.get("content")
        if content is not None and content.__class__ is not str:
            _content(content, f"messages[{i}]")
        calls = message.get("tool_calls")
        if calls is not None:
            _tool_calls(calls, f"messages[{i}].tool_calls")
        call = message.get("function_call")
        if call is not None and not isinstance(call, dict):
            place = f"messages[{i}].function_call"
            raise InvalidRequest(f"'{place}' must be an object", param=place)
    return len(messages)


def _tool_calls(calls: Any, place: str) -> None:
    """Validate a message's tool calls: an array of objects, each with a `function` object."""
    if not isinstance(calls, list):
        raise InvalidRequest(f"{place} must be an array", param=place)
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise InvalidRequest(f"{place} entries need a 'function' object", param=place)


def _items(value: Any) -> int:
    """Validate the Responses API's input: a string, or items whose content is a string or a list of parts."""
    if isinstance(value, str):
        return 1
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        content = item.get("content")
        if content is not None and content.__class__ is not str:
            _content(content, f"input[{i}]")
    return len(value)


def _content(content: Any, place: str) -> None:
    """Validate a message's content: absent, a string or an array of part objects."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{place}.content must be a string or an array of parts", param=f"{place}.content")
    for part in content:
        if not isinstance(part, dict):
            raise InvalidRequest(f"{place}.content parts must be objects", param=f"{place}.content")


def _prompts(value: Any, name: str) -> tuple[int, int]:
    """Validate a completions prompt or embeddings input; return (how many prompts, how many token ids)."""
    if isinstance(value, str):
        return 1, 0
    if not isinstance(value, list):
        raise InvalidRequest(f"'{name}' must be a string or an array", param=name)
    token_ids = 0
    for i, entry in enumerate(value):
        inner = entry if isinstance(entry, list) else (entry,)
        for item in inner:
            if _token_id(item):
                token_ids += 1
            elif not isinstance(item, str):
                raise InvalidRequest(f"{name}[{i}] must be a string, a token id or an array of them",
                                     param=f"{name}[{i}]")
    return len(value), token_ids


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(body: dict[str, Any]) -> None:
    """Validate the types of the optional fields routing reads."""
    if OPTIONS.isdisjoint(body):
        return
    for name in ("tools", "functions"):
        entries = body.get(name)
        if entries is not None and not isinstance(entries, list):
            raise InvalidRequest(f"'{name}' must be an array", param=name)
        for i, entry in enumerate(entries or ()):
            _tool(entry, f"{name}[{i}]", chat_tool=name == "tools" and "messages" in body)
    _optional_object(body, "response_format", "response_format")
    text = _optional_object(body, "text", "text")
    if text is not None:
        _optional_object(text, "format", "text.format")
    options = _optional_object(body, "stream_options", "stream_options")
    if options is not None and not isinstance(options.get("include_usage", False), bool):
        raise InvalidRequest("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")


def _tool(entry: Any, place: str, chat_tool: bool) -> None:
    """Validate a tool definition: an object; a chat function tool holds a `function` object with a string name."""
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{place} must be an object", param=place)
    kind = entry.get("type", "function")
    if not isinstance(kind, str):
        raise InvalidRequest(f"{place}.type must be a string", param=f"{place}.type")
    spec = _optional_object(entry, "function", f"{place}.function") if chat_tool else entry
    if chat_tool and kind == "function" and (spec is None or not isinstance(spec.get("name"), str)):
        raise InvalidRequest(f"{place}.function must be an object with a string 'name'", param=f"{place}.function")
    if spec is not None and spec.get("parameters") is not None and not isinstance(spec["parameters"], dict):
        raise InvalidRequest(f"{place}: 'parameters' must be an object", param=f"{place}.parameters")


def _optional_object(holder: dict[str, Any], name: str, place: str) -> dict[str, Any] | None:
    """holder[name] when it is an object, None when absent; InvalidRequest naming place otherwise."""
    value = holder.get(name)
    if value is not None and not isinstance(value, dict):
        raise InvalidRequest(f"'{place}' must be an object", param=place)
    return value


def _has_tools(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) or bool(body.get("functions"))


def _wants_json(body: dict[str, Any]) -> bool:
    text = body.get("text")
    response_format = body.get("response_format") or (text.get("format") if isinstance(text, dict) else None)
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def _largest(body: dict[str, Any], names: tuple[str, ...], most: int | None = None) -> int | None:
    """The largest of the optional positive integers body gives under names, None when it gives none."""
    largest = None
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if value.__class__ is not int or value < 1 or (most is not None and value > most):  # bool's class is bool
            bound = f" of at most {most}" if most is not None else ""
            raise InvalidRequest(f"'{name}' must be a positive integer{bound}", param=name)
        if largest is None or value > largest:
            largest = value
    return largest
