"""What the fake Gemini API checks of a request's contents: each Content's role and parts (one
kind of data per part; text, inlineData blobs with a MIME type the model reads, function calls and
responses, thought signatures as bytes), and the order of turns: a function call turn comes after a
user turn, and the next turn answers each of its calls by name.

A checked content is a Turn (its role and its camelCased parts), which chat.py also reads for the
thought signatures Gemini 3 wants back in the current turn.
"""

from __future__ import annotations

import json
from typing import Any

from .common import Invalid, check_base64, check_fields

# Field names in camelCase; check_fields() also accepts their snake_case forms.
# fmt: off
PART_DATA = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}
# fmt: on
PART_FIELDS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
# The image types the Gemini docs list (GIF is not one), and the other documented inline media.
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "application/pdf", "text/plain"}
INLINE_PREFIXES = ("audio/", "video/")


Turn = tuple[str, list[dict[str, Any]]]  # a content's role ("user" when unset) and its parts, camelCased


def check_content(content: Any, where: str) -> Turn:
    """Validate one Content; returns its role and its checked parts."""
    if not isinstance(content, dict):
        raise Invalid(
            f"Invalid value at '{where}' (type.googleapis.com/"
            f"google.ai.generativelanguage.v1beta.Content), {json.dumps(content)}",
            where,
        )
    content = check_fields(content, {"role", "parts"}, where)
    if content.get("role") not in (None, "", "user", "model"):
        raise Invalid("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    return content.get("role") or "user", [check_part(part, f"{where}.parts[{i}]") for i, part in enumerate(parts)]


def check_part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    part = check_fields(part, PART_FIELDS, where)
    data = sorted(PART_DATA & set(part))
    if not data:
        raise Invalid(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field\n"
        )
    if len(data) > 1:
        raise Invalid(f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{data[1]}'")
    if "text" in part and not isinstance(part["text"], str):
        raise Invalid(f"Invalid value at '{where}.text' (TYPE_STRING), {json.dumps(part['text'])}", f"{where}.text")
    if "inlineData" in part:
        check_blob(part["inlineData"], f"{where}.inline_data")
    if "functionCall" in part:
        part["functionCall"] = check_function_call(part["functionCall"], f"{where}.function_call")
    if "functionResponse" in part:
        part["functionResponse"] = check_function_response(part["functionResponse"], f"{where}.function_response")
    if "thoughtSignature" in part:
        check_base64(part["thoughtSignature"], f"{where}.thought_signature")
    return part


def check_struct(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Struct), {json.dumps(value)}")


def check_function_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    call = check_fields(call, {"id", "name", "args", "partialArgs", "willContinue"}, where)
    if not isinstance(call.get("name"), str) or not call["name"]:
        raise Invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")  # wording unverified
    if "args" in call:
        check_struct(call["args"], f"{where}.args")
    return call


def check_function_response(response: Any, where: str) -> dict[str, Any]:
    if not isinstance(response, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    response = check_fields(response, {"id", "name", "response", "parts", "willContinue", "scheduling"}, where)
    if not isinstance(response.get("name"), str) or not response["name"]:
        raise Invalid(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")  # wording unverified
    check_struct(response.get("response"), f"{where}.response")
    return response


def check_turns(turns: list[Turn]) -> None:
    """The order the API wants: a function call turn follows a user turn (or a function response
    turn), and the turn after it answers every one of its calls, by name (messages quoted from the
    API, except the name's)."""
    previous_role, previous_calls = "", list[dict[str, Any]]()
    for role, parts in turns:
        calls = [part["functionCall"] for part in parts if "functionCall" in part]
        responses = [part["functionResponse"] for part in parts if "functionResponse" in part]
        if calls and (role != "model" or previous_role != "user"):
            raise Invalid(
                "Please ensure that function call turn comes immediately after a user turn or after a "
                "function response turn."
            )
        if responses:
            check_responses(role, responses, previous_calls)
        previous_role, previous_calls = role, calls


def check_responses(role: str, responses: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
    if role != "user" or not calls:
        raise Invalid("Please ensure that function response turn comes immediately after a function call turn.")
    if len(responses) != len(calls):
        raise Invalid(
            "Please ensure that the number of function response parts is equal to the number of function "
            "call parts of the function call turn."
        )
    called = {call["name"] for call in calls}
    for response in responses:
        if response["name"] not in called:  # wording unverified
            raise Invalid(
                f"Function response {response['name']} does not match any function call of the function call turn."
            )


def current_turn_start(turns: list[Turn]) -> int:
    """Where the current turn starts: after the last user content that is not a function response."""
    for index in range(len(turns) - 1, -1, -1):
        role, parts = turns[index]
        if role == "user" and not any("functionResponse" in part for part in parts):
            return index + 1
    return 0


def check_blob(blob: Any, where: str) -> None:
    """An inlineData Blob: a mimeType the model reads and base64 data, both required."""
    if not isinstance(blob, dict):
        raise Invalid(f"Invalid value at '{where}'", where)
    blob = check_fields(blob, {"mimeType", "data"}, where)
    mime_type = blob.get("mimeType")
    if not isinstance(mime_type, str) or not mime_type:
        raise Invalid(f"* GenerateContentRequest.{where}.mime_type: required field is not specified\n")
    if mime_type not in INLINE_TYPES and not mime_type.startswith(INLINE_PREFIXES):
        raise Invalid(f"Unsupported MIME type: {mime_type}")  # wording unverified
    if not check_base64(blob.get("data"), f"{where}.data"):
        raise Invalid(f"* GenerateContentRequest.{where}.data: required field is not specified\n")
