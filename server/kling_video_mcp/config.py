"""Configuration, read from the environment (and nothing else).

Public environment variables (a contract: keep the names):

==========================  ===========================================================
each provider's variables  its key(s) and base URL, named by its class in ``providers/`` (e.g.
                            ``<NAME>_API_KEY``, ``<NAME>_BASE_URL``; all listed in ``server.json``).
``KLING_MCP_PROVIDER``      default provider; unset = the first provider with its keys set, else
                            the first that needs none (the free placeholder provider).
``KLING_MCP_MODE``          default mode: ``std``, ``pro`` or ``4k`` (default ``4k``).
``KLING_MCP_OUTPUT_DIR``    where finished clips land (default: ``<videos>/kling-video-mcp``).
``KLING_MCP_STATE_DIR``     where the server keeps its own files (journal, the placeholder provider's state).
``KLING_MCP_DATABASE_URL``  ``postgresql://…``: keep the journal in PostgreSQL (several workers);
                            unset: an SQLite file in ``KLING_MCP_STATE_DIR``.
``KLING_MCP_WEBHOOKS``      ``off`` stops asking providers for webhooks (default: on when
                            ``KLING_MCP_PUBLIC_URL`` is set).
``KLING_MCP_MAX_COST_USD``  refuse any single request estimated above this (default: no cap).
``KLING_MCP_BUDGET_USD``    each user's budget: refuse their new work once their period's estimated spend would pass this.
``KLING_MCP_TOTAL_BUDGET_USD`` the whole server's budget per period, all users together.
``KLING_MCP_BUDGET_PERIOD`` ``day`` (default), ``week`` or ``month``: calendar periods in UTC.
``KLING_MCP_CONFIRM_ABOVE_USD`` ask a person before sending any request estimated above this (default: never ask).
``KLING_MCP_HTTP_TOKEN``    HTTP only: every request must carry ``Authorization: Bearer <it>`` (one user).
``KLING_MCP_HTTP_TOKENS_FILE`` HTTP only: a file of users, one per line: a name and the SHA-256 of their token.
``KLING_MCP_OAUTH_ISSUER``  HTTP only: accept JWT access tokens from this OAuth issuer (its URL).
``KLING_MCP_OAUTH_AUDIENCE`` HTTP only: the audience those tokens must name (default: the public URL).
``KLING_MCP_PUBLIC_URL``    HTTP only: the base URL clients reach the server at (clip links).
``KLING_MCP_IMAGE_DIRS``    HTTP only: folders (``os.pathsep``-separated) local images may come from.
``KLING_MCP_ALLOWED_HOSTS`` HTTP only: extra ``Host`` values to accept (comma-separated).
``KLING_MCP_ALLOWED_ORIGINS`` HTTP only: extra ``Origin`` values to accept (comma-separated).
``KLING_MCP_MAX_CLIP_BYTES`` the largest clip download accepted, in bytes (default 2 GB).
``KLING_MCP_MAX_FILM_SECONDS`` the longest film ``assemble_video`` makes, in seconds (default 1800).
``KLING_MCP_ALLOW_PRIVATE_DOWNLOADS`` ``true``/``false``: clip downloads may/may not reach
                            loopback and private addresses (default: only when the provider's
                            own base URL is loopback or private, as for the emulator).
``KLING_MCP_URL_SECRET``    HTTP only: key signing expiring clip/preview links (default: generated).
==========================  ===========================================================

The remaining ``KLING_MCP_*`` settings tune timeouts and polling; their defaults suit real use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kling_video_mcp.models import Mode
from kling_video_mcp.providers import PROVIDERS, REAL_PROVIDERS, ProviderName, default_provider

__all__ = ["APP_NAME", "REAL_PROVIDERS", "Mode", "ProviderName", "Settings"]

APP_NAME = "kling-video-mcp"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


_KEY_VARIABLES = tuple(name for provider in PROVIDERS for name in provider.key_variables)
_OTHER_VARIABLES = tuple(
    name for provider in PROVIDERS for name in provider.variables() if name not in provider.key_variables
)


def _is_set(value: object) -> bool:
    """Whether a provider variable has a value: ``None`` and blank strings do not."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return isinstance(text, str) and bool(text.strip())


class Settings(BaseSettings):
    """Every setting of the server. Build with ``Settings()`` to read the environment."""

    model_config = SettingsConfigDict(env_prefix="KLING_MCP_", extra="ignore", populate_by_name=True)

    provider_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """Every registered provider's key variables that are set, by name (``{"<NAME>_API_KEY": ...}``).
    Read from the environment; given by keyword they win (``None`` there: unset, whatever the
    environment says). Read them through the provider: ``provider_class(name).keys(settings)``."""
    provider_settings: dict[str, str] = Field(default_factory=dict)
    """Every registered provider's other variables that are set (base URLs, e.g.
    ``{"<NAME>_BASE_URL": ...}``, and extras), by name; filled like :attr:`provider_keys`.
    Read them through the provider: ``provider_class(name).base_url(settings)``."""

    provider: ProviderName | None = Field(None, validation_alias=_env("KLING_MCP_PROVIDER"))
    mode: Mode = Field("4k", validation_alias=_env("KLING_MCP_MODE"))
    output_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_videos_dir()) / APP_NAME,
        validation_alias=_env("KLING_MCP_OUTPUT_DIR"),
    )
    state_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_state_dir(APP_NAME)),
        validation_alias=_env("KLING_MCP_STATE_DIR"),
    )

    database_url: SecretStr | None = Field(None, validation_alias=_env("KLING_MCP_DATABASE_URL"))
    """``postgresql://user:password@host:port/db``: the journal lives there (it may hold a
    password, hence secret); unset: SQLite in ``state_dir``."""
    lease_seconds: float = Field(15.0, gt=0)
    """How long a worker's lease on a task lasts unless renewed (renewed every third of it):
    a worker killed with ``kill -9`` loses its tasks to another this long after, at most."""

    max_cost_usd: float | None = Field(None, ge=0, validation_alias=_env("KLING_MCP_MAX_COST_USD"))
    budget_usd: float | None = Field(None, ge=0, validation_alias=_env("KLING_MCP_BUDGET_USD"))
    total_budget_usd: float | None = Field(None, ge=0, validation_alias=_env("KLING_MCP_TOTAL_BUDGET_USD"))
    budget_period: Literal["day", "week", "month"] = Field("day", validation_alias=_env("KLING_MCP_BUDGET_PERIOD"))
    confirm_above_usd: float | None = Field(None, ge=0, validation_alias=_env("KLING_MCP_CONFIRM_ABOVE_USD"))
    """A request estimated above this waits for a person's yes before anything is sent (see ``tasks/consent.py``)."""
    confirm_timeout_seconds: float = Field(1800.0, gt=0)
    """How long a request journaled as ``awaiting_confirmation`` waits for the person before it ends as declined."""
    clip_resource_max_bytes: int = 50 * 1024 * 1024
    """Largest clip served whole through ``resources/read`` (base64 in one JSON-RPC message)."""

    # HTTP timeouts, in seconds. Every call has all three (docs/providers.md#timeouts).
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    request_deadline: float = 120.0
    """Total wall-clock limit of one API request, retries excluded."""
    download_deadline: float = 1800.0
    """Total wall-clock limit of one clip download (a 4K clip can be hundreds of MB)."""
    max_clip_bytes: int = Field(2_000_000_000, gt=0, validation_alias=_env("KLING_MCP_MAX_CLIP_BYTES"))
    """Bytes: a download declaring or delivering more stops (a 15 s 4K clip is far below 2 GB)."""
    max_film_seconds: float = Field(1800.0, gt=0, validation_alias=_env("KLING_MCP_MAX_FILM_SECONDS"))
    """Seconds: ``assemble_video`` refuses a film longer than this (nested assemblies multiply fast)."""
    allow_private_downloads: bool | None = Field(None, validation_alias=_env("KLING_MCP_ALLOW_PRIVATE_DOWNLOADS"))
    """Whether clip downloads may connect to loopback, private and link-local addresses.
    ``None``: only for a provider whose own base URL is loopback or private (see
    :mod:`kling_video_mcp.tasks.addresses`)."""

    provider_rate_limit: float = Field(5.0, gt=0)
    """Requests per second to each provider, at most (polls, submits and uploads together)."""
    submit_retry_seconds: float = 30.0
    """How long a submit answered 429 is retried (nothing was created, so it is safe)."""
    poll_retry_seconds: float = 60.0
    """How long one poll is retried through 429, 5xx and network errors."""

    task_ceiling_seconds: float = 1800.0
    """A task unfinished this long after its expected end is marked ``timed_out``."""
    idempotency_window_seconds: float = 600.0
    """An identical request within this window returns the existing task instead of paying twice."""

    poll_time_scale: float = 1.0
    """Scales every polling pace (expected render times, poll intervals). Only for running
    against an emulator whose clock is sped up (tests, benchmarks); leave at 1 otherwise."""

    # -- HTTP deployment (``--transport streamable-http|sse``; stdio ignores all of these) --
    # Read by ``surface/http.py``. Security defaults are closed: no token means loopback
    # binds only, and no image folders means remote callers can name no local file.

    http_token: SecretStr | None = Field(None, validation_alias=_env("KLING_MCP_HTTP_TOKEN"))
    """A bearer token for one user (the same user as stdio's). Some sign-in (this, a token file
    or an OAuth issuer) is required to bind a non-loopback address."""
    http_tokens_file: Path | None = Field(None, validation_alias=_env("KLING_MCP_HTTP_TOKENS_FILE"))
    """Users, one per line: a name and the SHA-256 hex of their token (``surface/auth.py``)."""
    oauth_issuer: str | None = Field(None, validation_alias=_env("KLING_MCP_OAUTH_ISSUER"))
    """The OAuth authorization server whose JWT access tokens are accepted, exactly as its
    tokens' ``iss`` spells it (e.g. ``https://sso.example.com/realms/studio``)."""
    oauth_audience: str | None = Field(None, validation_alias=_env("KLING_MCP_OAUTH_AUDIENCE"))
    """The ``aud`` those tokens must carry; unset: the public URL (or its ``/mcp`` endpoint)."""
    oauth_jwks_cooldown_seconds: float = Field(30.0, ge=0)
    """Least seconds between two fetches of the issuer's keys forced by unknown ``kid`` values."""
    public_url: str | None = Field(None, validation_alias=_env("KLING_MCP_PUBLIC_URL"))
    """Base URL clients reach this server at (``https://host[:port][/prefix]``); clip links
    are ``<public_url>/clips/<file>``. Unset: ``http://<host>:<port>`` of the bind."""
    webhooks: bool = Field(True, validation_alias=_env("KLING_MCP_WEBHOOKS"))
    """With ``public_url`` set, each submit asks the provider to call
    ``<public_url>/webhooks/<token>`` when the task ends; ``off`` (``false``) stops that."""
    image_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias=_env("KLING_MCP_IMAGE_DIRS")
    )
    """Folders an HTTP caller may name local images in; empty: only URLs and data URIs."""
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("KLING_MCP_ALLOWED_HOSTS")
    )
    """``Host`` header values accepted besides loopback, the bind address and the public
    URL's host (DNS-rebinding protection); ``name:*`` allows any port."""
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("KLING_MCP_ALLOWED_ORIGINS")
    )
    """``Origin`` header values accepted besides loopback and the public URL's origin."""
    url_secret: SecretStr | None = Field(None, validation_alias=_env("KLING_MCP_URL_SECRET"))
    """Key of the signed, expiring ``/clips/`` and ``/previews/`` links the screening room plays;
    unset: a random key generated once into ``<state_dir>/url-secret``. Set it (the same on
    every worker) when workers on several machines serve one deployment."""

    @model_validator(mode="before")
    @classmethod
    def _provider_variables(cls, data: Any) -> Any:
        """Fill :attr:`provider_keys` and :attr:`provider_settings` with every registered provider's
        variables: given ones win, the environment gives the rest, and blank ones are unset."""
        if not isinstance(data, dict):
            return data
        for field, names in (("provider_keys", _KEY_VARIABLES), ("provider_settings", _OTHER_VARIABLES)):
            given = dict(data.get(field) or {})
            if unknown := sorted(set(given) - set(names)):
                raise ValueError(f"{field}: {', '.join(unknown)} is not a variable of any provider (known: {', '.join(names)})")
            values = {name: given[name] if name in given else os.environ.get(name) for name in names}
            data[field] = {name: value for name, value in values.items() if _is_set(value)}
        return data

    @field_validator("provider_settings")
    @classmethod
    def _no_credentials_in_base_url(cls, values: dict[str, str]) -> dict[str, str]:
        for provider in PROVIDERS:
            value = values.get(provider.base_url_variable or "")
            if value is None:
                continue
            # httpx2 would send user:pass as Basic auth instead of the key, and the URL (with them)
            # would show in every error and log line. Refuse it rather than strip it silently.
            parts = urlsplit(value)
            if parts.username is not None or parts.password is not None:
                raise ValueError(
                    f"{provider.base_url_variable} must not carry credentials (user:password@): put the provider key in "
                    f"{' and '.join(provider.key_variables)}, and a proxy's credentials in HTTPS_PROXY"
                )
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{provider.base_url_variable} must be an http:// or https:// URL (e.g. {provider.default_base_url})")
        return values

    @field_validator("http_token", "url_secret", "http_tokens_file", "oauth_audience", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # An empty KLING_MCP_HTTP_TOKEN= must not become a token that an empty header matches.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not text.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL: postgresql://user:password@host:port/database")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. https://videos.example.com)")
        return value.rstrip("/")

    @field_validator("oauth_issuer")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        # Kept as written: token ``iss`` claims are compared as exact strings (RFC 8414 §3.3).
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be the issuer's URL, e.g. https://sso.example.com/realms/studio")
        return value.strip()

    @field_validator("image_dirs", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        # PATH-style, so Windows drive letters ("C:\\x") survive; empty entries are dropped.
        return [part for part in value.split(os.pathsep) if part.strip()] if isinstance(value, str) else value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @property
    def signs_in(self) -> bool:
        """Whether HTTP callers must sign in (a token, a token file or an OAuth issuer)."""
        return self.http_token is not None or self.http_tokens_file is not None or self.oauth_issuer is not None

    @property
    def default_provider(self) -> ProviderName:
        """``KLING_MCP_PROVIDER``, else the first provider with its keys set, else the first that needs none."""
        return default_provider(self)

    def secrets(self) -> list[str]:
        """Every configured secret (every registered provider's keys among them), to be redacted
        from whatever a provider says (see :func:`kling_video_mcp.redact.redact`). A new
        secret setting is one more line."""
        configured = [
            *self.provider_keys.values(),
            self.http_token,
            self.url_secret,
        ]
        return [secret.get_secret_value() for secret in configured if secret is not None and secret.get_secret_value()]

    @property
    def webhook_base_url(self) -> str | None:
        """Where providers send webhooks (``<public_url>/webhooks``), or ``None`` when off."""
        return f"{self.public_url}/webhooks" if self.public_url and self.webhooks else None

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "tasks.sqlite3"

    @property
    def previews_dir(self) -> Path:
        """Preview proxies of finished clips (a cache: rebuilt from the clip when missing), in the
        output folder, which workers on several machines share (their state folders are their own)."""
        return self.output_dir / ".previews"

