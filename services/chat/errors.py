"""The failures a command can reply with (CONTRACTS.md: `{"ok": false, "code", "message"}`)."""

from typing import Literal

Code = Literal["forbidden", "invalid", "not_found", "rate_limited", "conflict", "unavailable"]


class ChatError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code
        self.message = message


def forbidden(message: str) -> ChatError:
    return ChatError("forbidden", message)


def invalid(message: str) -> ChatError:
    return ChatError("invalid", message)


def not_found(message: str) -> ChatError:
    return ChatError("not_found", message)


def conflict(message: str) -> ChatError:
    return ChatError("conflict", message)


def rate_limited(message: str) -> ChatError:
    return ChatError("rate_limited", message)
