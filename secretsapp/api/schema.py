"""OpenAPI post-processing: document the error responses every endpoint can give.

drf-spectacular documents successes; clients (and schemathesis) also need to know that
any operation may answer 401/403/429, that detail routes may 404, that writes may 400 or
413 (a body over the size limit), and that key writes may 412. One place adds them all,
with the common error body.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "additionalProperties": True,
    "description": "Every error has `detail`; a 400 also carries field errors by field name.",
}

DESCRIPTIONS = {
    "400": "Invalid input: `detail` plus field errors; nothing was changed.",
    "401": "Not signed in, or the token is invalid.",
    "403": "Signed in, but not allowed to do this.",
    "404": "No such object in your organization (also for other organizations' objects).",
    "412": "If-Match did not match: someone changed the object since you read it.",
    "409": "The run has already ended: there is nothing to cancel.",
    "413": "The request body is larger than the server accepts (DATA_UPLOAD_MAX_MEMORY_SIZE).",
    "429": "Too many requests: wait for the time given in Retry-After.",
}


def add_error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if path.endswith("/auth/token/"):
                codes = ["400", "429"]
            elif path.startswith("/hooks/"):  # the token is the credential: no 401
                codes = ["403", "429"]
            else:
                codes = ["401", "403", "429"]
            if method in ("post", "put", "patch") or operation.get("parameters"):
                codes.append("400")
            if method in ("post", "put", "patch"):
                codes.append("413")
            if "{" in path or any(
                parameter.get("name") == "page" for parameter in operation.get("parameters", [])
            ):
                codes.append("404")
            if any(
                parameter.get("name") == "If-Match" for parameter in operation.get("parameters", [])
            ):
                codes.append("412")
            if path.endswith("/cancel/"):
                codes.append("409")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": reference}},
                    },
                )
            if "/secrets/{id}/" in path and method in ("get", "patch"):
                responses["200"].setdefault("headers", {})["ETag"] = {
                    "schema": {"type": "string"},
                    "description": "Send it back in If-Match to make a write conditional. "
                    "Absent when a PATCH took away the caller's access to the key.",
                }
            if "202" in responses:
                responses["202"].setdefault("headers", {})["Location"] = {
                    "schema": {"type": "string", "format": "uri"},
                    "description": "The queued run: poll it with GET.",
                }
            if "/secrets/" in path and method == "post":
                responses["201"].setdefault("headers", {})["ETag"] = {"schema": {"type": "string"}}
    return result
