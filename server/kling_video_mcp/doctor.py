"""``kling-video-mcp doctor``: is my setup right? Checked without spending anything.

For each registered provider with its keys set, whether the provider accepts them, through
the free request its class names (:meth:`~kling_video_mcp.providers.base.Provider.check_key`:
a balance lookup, which also shows the balance, or a task lookup of an id that cannot exist,
where "not found" means the key works and 401/403 means it does not). Then the default provider and mode, whether the output and state
folders are writable, and the versions of the server, ``mcp`` and PyAV.

This is a command-line path, so it prints to stdout. It never prints a key. The exit status
is 0 when everything checked is fine, 1 when a key is refused, a provider cannot be reached,
or a folder is not writable.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

import anyio

from kling_video_mcp import __version__
from kling_video_mcp.config import Settings
from kling_video_mcp.errors import AuthError, InsufficientBalance, KlingError
from kling_video_mcp.providers import PROVIDERS, Provider, Providers, provider_class
from kling_video_mcp.providers.http import make_client

CHECK_RETRY_SECONDS = 5.0
"""How long one key check is retried through 429, 5xx and network errors (serving uses longer)."""


@dataclass(frozen=True)
class Finding:
    """One line of the report; ``ok`` is ``False`` for a problem that makes the exit status 1."""

    subject: str
    verdict: str
    ok: bool = True


def _key_subject(provider: type[Provider]) -> str:
    """``<label> key (<NAME>_API_KEY)``; with two variables, ``<label> keys (A, B)``."""
    return f"{provider.label} key{'s' if len(provider.key_variables) > 1 else ''} ({', '.join(provider.key_variables)})"


async def check_key(providers: Providers, name: str) -> Finding:
    """Whether ``name`` accepts its configured key (a free request)."""
    subject = _key_subject(provider_class(name))
    try:
        adapter = await providers.get(name)
        found = await adapter.check_key()
    except AuthError as exc:
        return Finding(subject, f"REFUSED. {exc.message}", ok=False)
    except InsufficientBalance as exc:
        return Finding(subject, f"accepted, but: {exc.message}")
    except KlingError as exc:
        return Finding(subject, f"could not be checked: {exc.message}", ok=False)
    return Finding(subject, "accepted" + (f", {found.detail}" if found.detail else ""))


def check_folder(subject: str, folder: Path) -> Finding:
    """Whether files can be created in ``folder`` (made if missing, as the server would)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding(f"{subject} {folder}", f"NOT WRITABLE ({exc.strerror or exc})", ok=False)
    return Finding(f"{subject} {folder}", "writable")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def versions() -> str:
    return (
        f"kling-video-mcp {__version__}, mcp {_package_version('mcp')}, PyAV {_package_version('av')}, "
        f"Python {platform.python_version()}"
    )


def defaults(settings: Settings) -> str:
    provider = provider_class(settings.default_provider)
    keyed = bool(provider.key_variables)
    why = "KLING_MCP_PROVIDER" if settings.provider else "the first provider with a key" if keyed else "no key set"
    free = " (free placeholder clips)" if provider.makes_placeholders else ""
    return f"default provider {provider.name}{free} ({why}); default mode {settings.mode}"


async def findings(settings: Settings) -> list[Finding]:
    """Every check, keys first (made concurrently), then folders."""
    settings = settings.model_copy(update={"poll_retry_seconds": CHECK_RETRY_SECONDS})
    real = [provider for provider in PROVIDERS if provider.key_variables]
    keyed = [provider.name for provider in real if provider.keys(settings) is not None]
    results: dict[str, Finding] = {}
    async with make_client(settings) as client:
        providers = Providers(settings, client)

        async def one(name: str) -> None:
            results[name] = await check_key(providers, name)

        async with anyio.create_task_group() as group:
            for name in keyed:
                group.start_soon(one, name)
    unset = [
        Finding(_key_subject(provider), "not set" if len(missing) == len(provider.key_variables) else f"{', '.join(missing)} not set")
        for provider in real
        if (missing := provider.missing_keys(settings))
    ]
    folders = [check_folder("output folder", settings.output_dir), check_folder("state folder", settings.state_dir)]
    return [results[name] for name in keyed] + unset + folders


def run_doctor(settings: Settings, out: TextIO) -> int:
    """Print the report to ``out``; returns the exit status (0 fine, 1 a problem)."""
    report = anyio.run(findings, settings)
    secrets = settings.secrets()
    lines = [versions(), defaults(settings)] + [f"{f.subject}: {f.verdict}" for f in report]
    problems = sum(not finding.ok for finding in report)
    lines.append("All good." if not problems else f"{problems} problem(s) found; see above.")
    text = "\n".join(lines)
    for secret in secrets:
        text = text.replace(secret, "***")  # a provider may echo what it was sent
    print(text, file=out)
    return 1 if problems else 0
