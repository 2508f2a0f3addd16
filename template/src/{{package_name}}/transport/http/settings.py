"""Settings of the HTTP transport, on top of the runtime's."""

from __future__ import annotations

from pydantic import Field, field_validator

from ...runtime.settings import RuntimeSettings


class HttpSettings(RuntimeSettings):
    """Everything the HTTP service reads from the environment at start-up."""

    max_body_size: int = Field(
        default=1024 * 1024,
        ge=1,
        le=1024 * 1024 * 1024,
        description=(
            "Largest request body in bytes; a larger one is refused with 413 before it is read "
            "in full. It also bounds the JSON parsing done on the event loop."
        ),
    )
    keep_alive_timeout: int = Field(
        default=75,
        ge=1,
        le=3600,
        description=(
            "Seconds an idle keep-alive connection stays open. Keep it above the idle timeout "
            "of the load balancer in front (ALB: 60 s), or it sees connections vanish: 502s."
        ),
    )
    max_header_size: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description=(
            "Largest request head (request line and header fields) in bytes; a larger one is "
            "answered 431 and the connection closed before the rest is read."
        ),
    )
    max_headers: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most header fields a request may have; more are answered 431.",
    )
    header_timeout: float = Field(
        default=15,
        gt=0,
        le=3600,
        description=(
            "Seconds a client may take to send a request's header fields, from its first byte "
            "(or from connecting); a slower one is answered 408 and disconnected."
        ),
    )
    request_budget: float | None = Field(
        default=60,
        gt=0,
        le=3600,
        description=(
            "Seconds a request may take, offloaded work included: its deadline, which the "
            "offload pool honours. Empty: no deadline."
        ),
    )

    @field_validator("request_budget", mode="before")
    @classmethod
    def _no_budget(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "off"}:
            return None
        return value
