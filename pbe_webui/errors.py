"""The one error the user sees: a mistake they can fix, with the fix in the message."""

from __future__ import annotations

from fastapi import HTTPException


class PaintByExampleError(HTTPException):
    """HTTP 400 with the message over the API; the message itself in the UI."""

    def __init__(self, message: str):
        super().__init__(status_code=400, detail=message)

    def __str__(self) -> str:
        return self.detail
