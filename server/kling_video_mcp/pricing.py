"""Transitional: ``tasks/service.py`` estimates through here until it calls
``provider_class(request.provider).estimate_usd(mode, sound, duration)``; then delete this module.

Every price, with its basis, lives in its provider's class (``Provider.prices``).
"""

from __future__ import annotations

from kling_video_mcp.providers import provider_class


def estimate_usd(provider: str, mode: str, sound: bool, duration: int) -> float:
    """Estimated cost of one render, in USD, rounded to the cent (see ``Provider.estimate_usd``)."""
    return provider_class(provider).estimate_usd(mode, sound, duration)  # type: ignore[arg-type]
