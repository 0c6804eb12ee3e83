"""Request-body validation, data-driven per flavor (providers.md §6.1 step 4, §6.2, §6.3 step 4).

All three providers share the Kling v3.0 field rules of §4; they differ per
route in which of ``prompt`` / ``multi_prompt`` is required, whether
``multi_prompt`` is taken at all (always as ``[{prompt, duration}]``, §10.1),
the shortest shot (§10.4) and WaveSpeed's ``shot_type`` default (§10.3); and
per provider in WaveSpeed's extra fields, which image encodings they take
(§10.6), and wording. Those differences are the :class:`FlavorRules`
tables below; :func:`validate` is the one implementation. Unknown fields are
ignored. Every failure is an :class:`ApiError` 400 whose message names the
field, with a Novita reason (INVALID_REQUEST_BODY, IMAGE_FILE_EXCEEDS_MAX_SIZE,
INVALID_IMAGE_FORMAT, INVALID_IMAGE_SIZE).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .config import EmulatorConfig
from .errors import ApiError, invalid
from .media import image_size, sniff_image
from .tasks import Shot

TIERS = ("std", "pro", "4k")
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
SHOT_TYPES = frozenset({"customize", "intelligent", "intelligence"})  # §3.3: accept both spellings
PROMPT_MAX = 2500
SHOT_PROMPT_MAX = 512
MAX_SHOTS = 6
MAX_ELEMENTS = 3
MIN_DURATION, MAX_DURATION, DEFAULT_DURATION = 3, 15, 5
IMAGE_MAX_BYTES = 10 * 1024 * 1024
IMAGE_MIN_SIDE = 300
IMAGE_RATIO = (0.4, 2.5)


class PromptPolicy(Enum):
    REQUIRED = "prompt required, multi_prompt (where accepted) allowed alongside"
    EITHER = "prompt required unless multi_prompt is given (and multi_prompt is accepted at all)"
    EXACTLY_ONE = "exactly one of prompt and multi_prompt"


class ShotStyle(Enum):
    NONE = "no multi_prompt"
    OBJECTS = "multi_prompt is [{prompt, duration}]; string items are refused (§10.1)"


@dataclass(frozen=True)
class RouteRules:
    """The prompt/shot rules of one route."""

    prompt: PromptPolicy
    shots: ShotStyle
    shortest_shot: int | None = None
    """Seconds; ``None`` uses ``EmulatorConfig.min_shot_seconds`` (Kling's own 1 s)."""
    shot_type_default: str | None = None
    """WaveSpeed: the ``shot_type`` assumed when none is sent; only ``customize`` reads ``multi_prompt``."""


@dataclass(frozen=True)
class Model:
    """A submit route: provider ``name``, ``tier`` (std|pro|4k) and ``mode`` (t2v|i2v)."""

    name: str
    tier: str
    mode: str


@dataclass(frozen=True)
class FlavorRules:
    """What one provider accepts; ``policies`` maps (tier, mode) to its prompt/shot rules."""

    policies: Mapping[tuple[str, str], RouteRules]
    inline_images: bool
    """Novita family takes data URIs and raw base64 as well as URLs (§1.3; on 4k-i2v see
    ``EmulatorConfig.inline_images_4k_i2v``, §10.6); WaveSpeed only URLs (§3.3)."""
    wavespeed_fields: bool
    """``shot_type``, ``element_list`` and ``enable_sync_mode`` exist (§3.3)."""
    field_message: Callable[[str, str], str]
    """Wording of a single-field problem: (field, problem) -> message."""
    both_prompts: str
    no_prompt: str
    end_image_with_shots: str


def _novita_words(field: str, problem: str) -> str:
    return f"{field} {problem}"


def _wavespeed_words(field: str, problem: str) -> str:
    return f'field "{field}" {problem}'


_R, _E, _X = PromptPolicy.REQUIRED, PromptPolicy.EITHER, PromptPolicy.EXACTLY_ONE
_N, _O = ShotStyle.NONE, ShotStyle.OBJECTS

NOVITA_RULES = FlavorRules(
    # std/4k t2v pages have no multi_prompt (shared/specs); pro t2v objects exclusive with prompt
    # (§1.3, §10.1); pro i2v objects exclusive with prompt (§10.1, §10.2); std/4k i2v mark prompt
    # required (§10.7) and take shots of 3-15 s (§10.4).
    policies={
        ("std", "t2v"): RouteRules(_R, _N), ("4k", "t2v"): RouteRules(_R, _N), ("pro", "t2v"): RouteRules(_X, _O),
        ("std", "i2v"): RouteRules(_R, _O, 3), ("4k", "i2v"): RouteRules(_R, _O, 3), ("pro", "i2v"): RouteRules(_X, _O),
    },
    inline_images=True,
    wavespeed_fields=False,
    field_message=_novita_words,
    both_prompts="prompt and multi_prompt are mutually exclusive",
    no_prompt="prompt is required",
    end_image_with_shots="end_image cannot be used together with multi_prompt",
)

HIGHWAY_RULES = FlavorRules(
    # §2.3 / §6.2: objects everywhere (§10.1); 4k+pro exclusive with prompt; std t2v has no
    # multi_prompt; std/4k i2v shots 3-15 s (§10.4).
    policies={
        ("std", "t2v"): RouteRules(_R, _N), ("4k", "t2v"): RouteRules(_X, _O), ("pro", "t2v"): RouteRules(_X, _O),
        ("std", "i2v"): RouteRules(_E, _O, 3), ("4k", "i2v"): RouteRules(_X, _O, 3), ("pro", "i2v"): RouteRules(_X, _O),
    },
    inline_images=True,
    wavespeed_fields=False,
    field_message=_novita_words,
    both_prompts="prompt and multi_prompt are mutually exclusive",
    no_prompt="prompt or multi_prompt is required",
    end_image_with_shots="end_image cannot be used together with multi_prompt",
)

WAVESPEED_RULES = FlavorRules(
    # §3.3: std/pro exactly one of prompt and multi_prompt, as is every i2v; 4K t2v requires prompt
    # (§10.7). Shots 3-15 s (§10.4). shot_type defaults to intelligent on Std/Pro and customize on
    # 4K, and only customize reads multi_prompt (§10.3).
    policies={
        (tier, mode): RouteRules(
            _R if (tier, mode) == ("4k", "t2v") else _X, _O, 3, "customize" if tier == "4k" else "intelligent"
        )
        for tier in TIERS
        for mode in ("t2v", "i2v")
    },
    inline_images=False,
    wavespeed_fields=True,
    field_message=_wavespeed_words,
    both_prompts="Either prompt or multi_prompt must be provided, but not both",
    no_prompt='field "prompt" is required',
    end_image_with_shots="multi_shot is not supported with end image",
)

NOVITA_MODELS: dict[str, Model] = {
    f"kling-v3.0-{tier}-{mode}": Model(f"kling-v3.0-{tier}-{mode}", tier, mode)
    for tier in TIERS
    for mode in ("t2v", "i2v")
}
"""§1.2: the six ``/v3/async/<name>`` routes (Novita and HighwayAPI)."""

WAVESPEED_MODELS: dict[str, Model] = {
    f"kwaivgi/kling-v3.0-{tier}/{task}": Model(f"kwaivgi/kling-v3.0-{tier}/{task}", tier, mode)
    for tier in TIERS
    for mode, task in (("t2v", "text-to-video"), ("i2v", "image-to-video"))
}
"""§3.2: the six ``/api/v3/<model id>`` routes."""


@dataclass(frozen=True)
class ImageInput:
    """An image field after decoding: the URL it came from (``""`` when inline) and, when the
    emulator could see them, its bytes and pixel size. ``unreachable`` marks a URL the provider
    would fail to download (§6.0)."""

    url: str
    data: bytes | None = None
    width: int = 0
    height: int = 0
    unreachable: bool = False


UrlResolver = Callable[[str], ImageInput]
"""Turns an http(s) image URL into an :class:`ImageInput` (own media is read, others taken as-is)."""


@dataclass(frozen=True)
class Submission:
    """A request that passed validation, normalised."""

    model: Model
    prompt: str | None
    shots: tuple[Shot, ...]
    duration: int
    sound: bool
    aspect_ratio: str
    image: ImageInput | None
    end_image: ImageInput | None
    sync: bool

    def texts(self) -> list[str]:
        """Where prompt tokens may hide: the prompt, every shot prompt, and image URLs (§6.0)."""
        texts = [self.prompt or ""] + [shot.text for shot in self.shots]
        return texts + [image.url for image in (self.image, self.end_image) if image is not None]

    def scenes(self) -> list[Shot]:
        """What the clip shows and for how long: the shots, or the prompt for the whole duration."""
        return list(self.shots) or [Shot(self.prompt or "", float(self.duration))]


def validate(
    rules: FlavorRules, model: Model, body: Mapping[str, Any], resolve_url: UrlResolver, config: EmulatorConfig
) -> Submission:
    """Check ``body`` for ``model`` under ``rules``; return the normalised request or raise ``ApiError``.

    Order: prompt/multi_prompt presence, scalar fields, shots, WaveSpeed extras,
    then images (the costly checks) last, as listed in §6.1 step 4.
    """
    route = rules.policies[(model.tier, model.mode)]
    inline = rules.inline_images and (config.inline_images_4k_i2v or (model.tier, model.mode) != ("4k", "i2v"))
    check = _Checker(rules, inline)
    prompt = check.optional_text(body, "prompt", PROMPT_MAX)
    raw_shots = body.get("multi_prompt")
    has_shots = raw_shots not in (None, [])
    if has_shots and route.shots is ShotStyle.NONE:
        raise check.error("multi_prompt", "is not supported by this model")
    if prompt and has_shots and route.prompt is PromptPolicy.EXACTLY_ONE:
        raise invalid(rules.both_prompts)
    if not prompt and (not has_shots or route.prompt is PromptPolicy.REQUIRED):
        raise invalid(rules.no_prompt)
    check.optional_text(body, "negative_prompt", PROMPT_MAX)
    duration = check.integer(body, "duration", DEFAULT_DURATION, MIN_DURATION, MAX_DURATION)
    check.number(body, "cfg_scale", 0.0, 1.0)
    aspect_ratio = check.choice(body, "aspect_ratio", ASPECT_RATIOS, "16:9") if model.mode == "t2v" else "16:9"
    sound = check.boolean(body, "sound")
    shortest = route.shortest_shot if route.shortest_shot is not None else config.min_shot_seconds
    shots = check.shots(raw_shots, shortest, duration, config) if has_shots else ()
    sync = False
    if rules.wavespeed_fields:
        shot_type = check.choice(body, "shot_type", SHOT_TYPES, route.shot_type_default or "customize")
        if has_shots and shot_type != "customize":
            raise check.error("shot_type", 'must be "customize" when multi_prompt is given')
        check.elements(body.get("element_list"))
        sync = check.boolean(body, "enable_sync_mode")
    image = end_image = None
    if model.mode == "i2v":
        if body.get("end_image") not in (None, "") and has_shots:
            raise invalid(rules.end_image_with_shots)
        image = check.image(body.get("image"), "image", resolve_url, required=True)
        end_image = check.image(body.get("end_image"), "end_image", resolve_url, required=False)
    return Submission(model, prompt or None, shots, duration, sound, aspect_ratio, image, end_image, sync)


class _Checker:
    """Field checks that word their failures the flavor's way."""

    def __init__(self, rules: FlavorRules, inline_images: bool) -> None:
        self.rules = rules
        self.inline_images = inline_images

    def error(self, field: str, problem: str, reason: str = "INVALID_REQUEST_BODY") -> ApiError:
        return invalid(self.rules.field_message(field, problem), reason)

    def optional_text(self, body: Mapping[str, Any], field: str, limit: int) -> str:
        value = body.get(field)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(field, "must be a string")
        if len(value) > limit:
            raise self.error(field, f"must not exceed {limit} characters")
        return value

    def integer(self, body: Mapping[str, Any], field: str, default: int, low: int, high: int) -> int:
        value = body.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, "must be an integer")
        if not low <= value <= high:
            raise self.error(field, f"must be between {low} and {high}")
        return value

    def number(self, body: Mapping[str, Any], field: str, low: float, high: float) -> None:
        value = body.get(field)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(field, "must be a number")
        if not low <= value <= high:
            raise self.error(field, f"must be between {low:g} and {high:g}")

    def choice(
        self, body: Mapping[str, Any], field: str, allowed: Mapping[str, Any] | frozenset[str], default: str
    ) -> str:
        value = body.get(field, default)
        if not isinstance(value, str) or value not in allowed:
            raise self.error(field, f"must be one of {', '.join(sorted(allowed))}")
        return value

    def boolean(self, body: Mapping[str, Any], field: str) -> bool:
        value = body.get(field, False)
        if not isinstance(value, bool):
            raise self.error(field, "must be a boolean")
        return value

    def shots(self, raw: Any, shortest: int, duration: int, config: EmulatorConfig) -> tuple[Shot, ...]:
        """§4: 1-6 shots ``{prompt, duration}``, prompts 1-512 chars, each shot ``shortest``..15 whole
        seconds (§10.4), adding up to ``duration``. String items are refused (§10.1)."""
        if not isinstance(raw, list):
            raise self.error("multi_prompt", "must be an array")
        if len(raw) > MAX_SHOTS:
            raise self.error("multi_prompt", f"must contain 1 to {MAX_SHOTS} shots")
        shots = []
        for index, item in enumerate(raw):
            where = f"multi_prompt[{index}]"
            if not isinstance(item, Mapping):
                raise self.error(where, "must be an object with prompt and duration")
            text = self._shot_prompt(item.get("prompt"), f"{where}.prompt")
            seconds = item.get("duration")
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise self.error(f"{where}.duration", "must be an integer")
            if not shortest <= seconds <= min(duration, MAX_DURATION):
                raise self.error(f"{where}.duration", f"must be between {shortest} and {min(duration, MAX_DURATION)}")
            shots.append(Shot(text, float(seconds)))
        total = sum(shot.seconds for shot in shots)
        if config.check_shot_sum and total != duration:
            raise self.error("multi_prompt", f"shot durations add up to {total:g}s but duration is {duration}s")
        return tuple(shots)

    def _shot_prompt(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= SHOT_PROMPT_MAX:
            raise self.error(field, f"must be a string of 1 to {SHOT_PROMPT_MAX} characters")
        return value

    def elements(self, raw: Any) -> None:
        """§3.3: up to 3 items, each ``{"element_id": str}`` or a bare string."""
        if raw is None:
            return
        if not isinstance(raw, list) or len(raw) > MAX_ELEMENTS:
            raise self.error("element_list", f"must be an array of at most {MAX_ELEMENTS} elements")
        for item in raw:
            element_id = item.get("element_id") if isinstance(item, Mapping) else item
            if not isinstance(element_id, str) or not element_id:
                raise self.error("element_list", "items must be element ids or {element_id} objects")

    def image(self, value: Any, field: str, resolve_url: UrlResolver, required: bool) -> ImageInput | None:
        """Decode an image field (URL, data URI, or raw base64) and check what can be seen of it (§6.0)."""
        if value is None or value == "":
            if required:
                raise self.error(field, "is required")
            return None
        if not isinstance(value, str):
            raise self.error(field, "must be a string")
        if value.startswith(("http://", "https://")):
            found = resolve_url(value)
        elif not self.inline_images:
            raise self.error(field, "must be an http(s) URL")
        else:
            found = ImageInput(url="", data=self._inline_bytes(value, field))
        if found.data is None:
            return found
        width, height = self._inspect(found.data, field)
        return ImageInput(found.url, found.data, width, height)

    def _inline_bytes(self, value: str, field: str) -> bytes:
        payload = value
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            if not header.startswith("data:image/"):
                raise self.error(field, "must be a JPEG or PNG image", "INVALID_IMAGE_FORMAT")
            if not header.endswith(";base64"):
                raise self.error(field, "data URI must be base64-encoded")
        try:
            return base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            raise self.error(field, "must be an http(s) URL, a data URI or base64 image data") from None

    def _inspect(self, data: bytes, field: str) -> tuple[int, int]:
        """§1.3 image rules: ≤10 MB, JPEG/PNG, sides ≥300 px, 0.4 ≤ w/h ≤ 2.5."""
        if len(data) > IMAGE_MAX_BYTES:
            raise self.error(field, "file size must not exceed 10MB", "IMAGE_FILE_EXCEEDS_MAX_SIZE")
        size = image_size(data) if sniff_image(data) in ("jpeg", "png") else None
        if size is None:
            raise self.error(field, "must be a JPEG or PNG image", "INVALID_IMAGE_FORMAT")
        width, height = size
        if min(size) < IMAGE_MIN_SIDE or not IMAGE_RATIO[0] <= width / height <= IMAGE_RATIO[1]:
            raise self.error(
                field,
                "width and height must be >= 300px and aspect ratio between 1:2.5 and 2.5:1",
                "INVALID_IMAGE_SIZE",
            )
        return width, height
