"""Estimated prices, in USD per second of generated video, by provider, mode and sound.

Sources (providers.md §5.1, read 2026-11-21):

- WaveSpeed 4K: $0.42/s "regardless of whether audio is on or off" (the provider's Kling
  v3.0 4K page, ``shared/specs/wavespeed-kling-v3.0-4k-t2v.txt``): confirmed.
- WaveSpeed Std: $0.42 per default 5 s run = $0.084/s (the provider's Std page): confirmed
  silent; with sound not published, assumed x1.5 like the market.
- Novita and HighwayAPI publish no USD prices. Their Chinese twin PPIO charges a x1.5
  tier with sound. Market rates are used: 4K $0.42/s, Std $0.084/s ($0.126 with sound),
  Pro $0.112/s ($0.168 with sound): estimates.
- WaveSpeed Pro: not published; the same Pro estimate is used.

An estimate is what the result says it is: a number and the basis it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from kling_video_mcp.config import Mode, ProviderName


@dataclass(frozen=True)
class Price:
    usd_per_second: float
    confirmed: bool
    source: str

    @property
    def basis(self) -> str:
        """Where the number comes from, and whether it is confirmed, for results."""
        return f"{self.source} ({'confirmed' if self.confirmed else 'estimate'})"


_MARKET = {
    ("std", False): 0.084,
    ("std", True): 0.126,
    ("pro", False): 0.112,
    ("pro", True): 0.168,
    ("4k", False): 0.42,
    ("4k", True): 0.42,
}
_CONFIRMED = {
    ("wavespeed", "4k", False): "WaveSpeedAI Kling v3.0 4K page",
    ("wavespeed", "4k", True): "WaveSpeedAI Kling v3.0 4K page",
    ("wavespeed", "std", False): "WaveSpeedAI Kling v3.0 Std page",
}


def price(provider: ProviderName, mode: Mode, sound: bool) -> Price:
    """The per-second price used for estimates (the sandbox is free)."""
    if provider == "sandbox":
        return Price(0.0, True, "sandbox: the bundled emulator, free")
    source = _CONFIRMED.get((provider, mode, sound))
    if source:
        return Price(_MARKET[(mode, sound)], True, source)
    return Price(_MARKET[(mode, sound)], False, "market rate for Kling v3.0 (the provider publishes no USD price)")


def estimate_usd(provider: ProviderName, mode: Mode, sound: bool, duration: int) -> float:
    """Estimated cost of one render, in USD, rounded to the cent."""
    return round(price(provider, mode, sound).usd_per_second * duration, 2)
