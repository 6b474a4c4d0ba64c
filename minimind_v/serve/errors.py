"""API errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with a 4xx status.

Every check in the server raises `APIError`; one handler turns it into the JSON body, so a client
library (the `openai` package raises `BadRequestError`, `AuthenticationError`, ... by status) sees the
same thing it would see from the real API. `type` follows OpenAI's names:

    400 invalid_request_error   malformed JSON, wrong types, unknown fields, bad images, too long
    401 authentication_error    missing or wrong API key (code invalid_api_key)
    404 not_found_error         unknown route or model (code model_not_found)
    405 invalid_request_error   wrong HTTP method
    413 invalid_request_error   body or image too large
    429 rate_limit_error        the request queue is full
"""
from __future__ import annotations

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error to send to the client: HTTP status + the OpenAI error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)
