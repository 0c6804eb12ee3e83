"""Request-body validation, data-driven per flavor (docs/providers.md#emulator-validation).

All three providers share the Kling v3.0 field rules (docs/providers.md#common-fields); they differ per
route in which of ``prompt`` / ``multi_prompt`` is required, whether
``multi_prompt`` is taken at all (always as ``[{prompt, duration}]``),
the shortest shot and WaveSpeed's ``shot_type`` default; and
per provider in WaveSpeed's extra fields, which image encodings they take
(each in docs/providers.md), and wording. Those differences are the :class:`FlavorRules`
tables below; :func:`validate` is the one implementation. Unknown fields are
ignored. Every failure is an :class:`ApiError` 400 whose message names the
field, with a Novita reason (INVALID_REQUEST_BODY, IMAGE_FILE_EXCEEDS_MAX_SIZE,
INVALID_IMAGE_FORMAT, INVALID_IMAGE_SIZE).

Kling's official API, fal.ai and Replicate write the same fields in dialects of their own
(strings for seconds, ``sound: "on"``, indexed or JSON-encoded shots, other image encodings):
each is a :class:`HostRules` table at the end of this module, one :class:`FieldRule` per field
with the public source of its rule, read by :func:`read_fields`; their refusals are
:class:`FieldError`, which names the field for envelopes that list it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from .config import EmulatorConfig
from .errors import ApiError, invalid
from .media import image_size, sniff_image
from .tasks import Shot

TIERS = ("std", "pro", "4k")
ASPECT_RATIOS = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
SHOT_TYPES = frozenset({"customize", "intelligent", "intelligence"})  # docs/providers.md#wavespeed-shot-type: accept both spellings
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
    OBJECTS = "multi_prompt is [{prompt, duration}]; string items are refused (docs/providers.md#multi-shot-prompts)"


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
    """Novita family takes data URIs and raw base64 as well as URLs (docs/providers.md#novita-images; on 4k-i2v see
    ``EmulatorConfig.inline_images_4k_i2v``); WaveSpeed only URLs (docs/providers.md#wavespeed-uploads)."""
    wavespeed_fields: bool
    """``shot_type``, ``element_list`` and ``enable_sync_mode`` exist (docs/providers.md#wavespeed-fields-sent)."""
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
    # docs/providers.md#novita-rules: std/4k t2v pages have no multi_prompt; pro t2v objects exclusive
    # with prompt; pro i2v objects exclusive with prompt; std/4k i2v mark prompt
    # required and take shots of 3-15 s.
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
    # docs/providers.md#highway-rules: objects everywhere; 4k+pro exclusive with prompt; std t2v has no
    # multi_prompt; std/4k i2v shots 3-15 s.
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
    # docs/providers.md#wavespeed-rules: std/pro exactly one of prompt and multi_prompt, as is every i2v; 4K t2v requires prompt
    # too. Shots 3-15 s. shot_type defaults to intelligent on Std/Pro and customize on
    # 4K, and only customize reads multi_prompt.
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
"""The six ``/v3/async/<name>`` routes of Novita and HighwayAPI (docs/providers.md#novita-submit-routes)."""

WAVESPEED_MODELS: dict[str, Model] = {
    f"kwaivgi/kling-v3.0-{tier}/{task}": Model(f"kwaivgi/kling-v3.0-{tier}/{task}", tier, mode)
    for tier in TIERS
    for mode, task in (("t2v", "text-to-video"), ("i2v", "image-to-video"))
}
"""The six ``/api/v3/<model id>`` routes (docs/providers.md#wavespeed-submit-routes)."""


@dataclass(frozen=True)
class ImageInput:
    """An image field after decoding: the URL it came from (``""`` when inline) and, when the
    emulator could see them, its bytes and pixel size. ``unreachable`` marks a URL the provider
    would fail to download (docs/providers.md#emulator-validation)."""

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
        """Where prompt tokens may hide: the prompt, every shot prompt, and image URLs (docs/providers.md#emulator-prompt-tokens)."""
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
    then images (the costly checks) last, as listed in docs/providers.md#emulator-validation.
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


class FieldError(ApiError):
    """A 400 refusing one field: ``field`` is its path (``multi_prompt[1].duration``) and ``kind``
    says what is wrong in one word (``missing``, ``invalid_type``, ``enum``, ``value_error``,
    ``not_allowed``), for envelopes that name the field (fal's ``loc``, Replicate's ``invalid_fields``)."""

    def __init__(
        self, field: str, message: str, reason: str = "INVALID_REQUEST_BODY", kind: str = "value_error"
    ) -> None:
        super().__init__(400, reason, message)
        self.field = field
        self.kind = kind


class _Checker:
    """Field checks that word their failures the flavor's way."""

    def __init__(
        self, rules: FlavorRules | HostRules, inline_images: bool, *, data_uri: bool = True, raw_base64: bool = True
    ) -> None:
        self.rules = rules
        self.inline_images = inline_images
        self.data_uri = data_uri
        """Inline images may be ``data:`` URIs (Kling's own API refuses the prefix, docs/providers.md#kling-images)."""
        self.raw_base64 = raw_base64
        """Inline images may be bare base64 (fal and Replicate take only data URIs,
        docs/providers.md#fal-in-the-emulator, docs/providers.md#replicate-in-the-emulator)."""

    def error(
        self, field: str, problem: str, reason: str = "INVALID_REQUEST_BODY", kind: str = "value_error"
    ) -> FieldError:
        return FieldError(field, self.rules.field_message(field, problem), reason, kind)

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
        """1-6 shots ``{prompt, duration}``, prompts 1-512 chars, each shot ``shortest``..15 whole
        seconds, adding up to ``duration``; string items are refused (docs/providers.md#multi-shot-prompts)."""
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
        """Up to 3 items, each ``{"element_id": str}`` or a bare string (docs/providers.md#wavespeed-element-list)."""
        if raw is None:
            return
        if not isinstance(raw, list) or len(raw) > MAX_ELEMENTS:
            raise self.error("element_list", f"must be an array of at most {MAX_ELEMENTS} elements")
        for item in raw:
            element_id = item.get("element_id") if isinstance(item, Mapping) else item
            if not isinstance(element_id, str) or not element_id:
                raise self.error("element_list", "items must be element ids or {element_id} objects")

    def image(self, value: Any, field: str, resolve_url: UrlResolver, required: bool) -> ImageInput | None:
        """Decode an image field (URL, data URI, or raw base64) and check what can be seen of it (docs/providers.md#emulator-validation)."""
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
        if value.startswith("data:") and not self.data_uri:
            raise self.error(field, "must be a URL or raw base64 without a data: prefix")
        if not value.startswith("data:") and not self.raw_base64:
            raise self.error(field, "must be an http(s) URL or a data URI")
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
        """Image rules (docs/providers.md#input-images): ≤10 MB, JPEG/PNG, sides ≥300 px, 0.4 ≤ w/h ≤ 2.5."""
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


# ---------------------------------------------------------------------------------------------
# Hosts with field dialects of their own: Kling's official API, fal.ai and Replicate
# (docs/providers.md#kling-in-the-emulator and the fal and Replicate ones). Each is one HostRules
# table: every field it reads, with its type, bounds, default and the public source of the rule,
# plus the rules that tie fields together. read_fields is the one interpreter. Fields a route
# does not list are ignored, unless the host refuses unknown inputs (Replicate).

KLING_API = "https://app.klingai.com/global/dev/document-api/apiReference/commonInfo"
KLING_API_COPY = "https://github.com/WHQ25/rawgenai/tree/main/docs/research/kling"
KLING_VERCEL = "https://github.com/vercel/ai/tree/main/packages/klingai/src"
KLING_V3_T2V = "https://docs.powertokens.ai/en/zmodelVideo/kling/kling-v3-text2video"
KLING_V3_I2V = "https://docs.powertokens.ai/en/zmodelVideo/kling/kling-v3-image2video"
KLING_V3_4K = "https://github.com/magicwang1111/Comfyui-Kling-Wrapper/blob/main/py/api/capabilities.py"
FAL_KLING_V3 = "https://github.com/fal-ai/fal-js/blob/main/libs/client/src/types/endpoints.ts"
FAL_KLING_V3_PAGE = "https://fal.ai/models/fal-ai/kling-video/v3/pro/image-to-video/api"
REPLICATE_KLING_V3 = "https://replicate.com/kwaivgi/kling-v3-video/api"
REPLICATE_JS = "https://github.com/replicate/replicate-javascript/blob/main/index.d.ts"

ROUTES = frozenset({"t2v", "i2v"})
T2V_ONLY = frozenset({"t2v"})
I2V_ONLY = frozenset({"i2v"})


class Role(Enum):
    """What a field means to the emulator (the rest is only checked)."""

    TIER = "tier"
    PROMPT = "prompt"
    DURATION = "duration"
    SOUND = "sound"
    ASPECT_RATIO = "aspect_ratio"
    SHOTS = "shots"
    IMAGE = "image"
    END_IMAGE = "end_image"


class Kind(Enum):
    """The JSON shape a field must have."""

    TEXT = "a string"
    SECONDS = 'a string of whole seconds such as "5"'
    INTEGER = "an integer"
    NUMBER = "a number"
    BOOLEAN = "a boolean"
    CHOICE = "one of the listed strings (each mapped to what it means)"
    IMAGE = "an image: a URL, or inline data in the host's encodings"
    SHOTS = "a list of shots"
    ELEMENT_IDS = 'a list of {"element_id": integer}'
    VOICES = 'a list of {"voice_id": string}'
    FAL_ELEMENTS = "a list of {frontal_image_url, reference_image_urls, video_url, voice_id}"


@dataclass(frozen=True)
class ShotFormat:
    """How one host writes ``multi_prompt``."""

    seconds: Kind
    """``SECONDS`` (``"3"``) or ``INTEGER`` (``3``)."""
    indexed: bool = False
    """Every shot carries an integer ``index`` (Kling)."""
    json_string: bool = False
    """The whole list is one JSON-encoded string (Replicate)."""
    default_seconds: int | None = None
    """Seconds of a shot that gives none (fal: 5); ``None``: ``duration`` is required."""
    shortest: int | None = None
    """Shortest shot in seconds; ``None`` uses ``EmulatorConfig.min_shot_seconds`` (uncertain: 1 or 3)."""


@dataclass(frozen=True)
class FieldRule:
    """One request field of a host: its type, bounds, default, meaning and the source of the rule.

    ``default`` is already normalised (seconds as ``int``, a choice as its meaning); ``choices``
    maps each accepted string to its meaning, and ``switched`` names, for some choices, the
    ``EmulatorConfig`` switch that decides whether they exist at all (uncertain facts).
    ``read_if`` looks at the fields read before it (table order) and skips this one when false,
    as Kling ignores ``multi_prompt`` unless ``multi_shot`` is set.
    """

    name: str
    kind: Kind
    source: str
    role: Role | None = None
    required: bool = False
    default: Any = None
    bounds: tuple[float, float] | None = None
    choices: Mapping[str, Any] | None = None
    switched: tuple[tuple[str, str], ...] = ()
    routes: frozenset[str] = ROUTES
    read_if: Callable[[Mapping[str, Any]], bool] | None = None
    shots: ShotFormat | None = None


@dataclass(frozen=True)
class CrossRule:
    """A rule tying fields together; ``broken(values, route)`` is true when the request breaks it,
    and the refusal names ``field`` with ``problem``."""

    field: str
    problem: str
    source: str
    broken: Callable[[Mapping[str, Any], str], bool]


@dataclass(frozen=True)
class HostRules:
    """Everything one host checks in a submit body."""

    fields: tuple[FieldRule, ...]
    cross_rules: tuple[CrossRule, ...]
    data_uri: bool
    """Inline images may be ``data:`` URIs."""
    raw_base64: bool
    """Inline images may be bare base64."""
    image_source: str
    refuse_unknown: bool = False
    """Fields the route does not list are refused (Replicate validates inputs against the model's schema)."""
    field_message: Callable[[str, str], str] = _novita_words


def _multi_shot(values: Mapping[str, Any]) -> bool:
    return bool(values.get("multi_shot"))


def _custom_shots(values: Mapping[str, Any]) -> bool:
    return _multi_shot(values) and values.get("shot_type") == "customize"


KLING_HOST_RULES = HostRules(
    fields=(
        # Only kling-v3 is emulated; an omitted model_name means kling-v1
        # (docs/providers.md#kling-fields-sent).
        FieldRule("model_name", Kind.CHOICE, KLING_VERCEL, required=True, choices={"kling-v3": "kling-v3"}),
        # std | pro, "standard" refused live; 4k on kling-v3 per several clients, not in the
        # Vercel SDK's enum: EmulatorConfig.kling_4k_mode plays either reading (docs/providers.md#kling-4k).
        FieldRule(
            "mode", Kind.CHOICE, KLING_V3_4K, role=Role.TIER, default="std",
            choices={"std": "std", "pro": "pro", "4k": "4k"}, switched=(("4k", "kling_4k_mode"),),
        ),
        FieldRule("multi_shot", Kind.BOOLEAN, KLING_V3_T2V, default=False),
        FieldRule(
            "shot_type", Kind.CHOICE, KLING_V3_T2V, required=True, read_if=_multi_shot,
            choices={"customize": "customize", "intelligence": "intelligence"},
        ),
        # Required unless multi_shot with shot_type customize, which ignores it (docs/providers.md#kling-prompt-rule).
        FieldRule(
            "prompt", Kind.TEXT, KLING_V3_T2V, role=Role.PROMPT, required=True, bounds=(0, PROMPT_MAX),
            read_if=lambda values: not _custom_shots(values),
        ),
        FieldRule("negative_prompt", Kind.TEXT, KLING_API_COPY, bounds=(0, PROMPT_MAX)),
        FieldRule("cfg_scale", Kind.NUMBER, KLING_API_COPY, bounds=(0, 1)),
        FieldRule(
            "sound", Kind.CHOICE, KLING_VERCEL, role=Role.SOUND, default=False, choices={"on": True, "off": False}
        ),
        FieldRule(
            "aspect_ratio", Kind.CHOICE, KLING_VERCEL, role=Role.ASPECT_RATIO, default="16:9",
            choices={ratio: ratio for ratio in ASPECT_RATIOS}, routes=T2V_ONLY,
        ),
        FieldRule(
            "duration", Kind.SECONDS, KLING_VERCEL, role=Role.DURATION, default=DEFAULT_DURATION,
            bounds=(MIN_DURATION, MAX_DURATION),
        ),
        # [{index, prompt, duration: "3"}]: 1-6 shots of at least 1 s adding up to duration
        # (docs/providers.md#kling-multi-shot-prompts).
        FieldRule(
            "multi_prompt", Kind.SHOTS, KLING_V3_T2V, role=Role.SHOTS, required=True, read_if=_custom_shots,
            shots=ShotFormat(Kind.SECONDS, indexed=True, shortest=1),
        ),
        FieldRule("voice_list", Kind.VOICES, KLING_V3_T2V, bounds=(0, 2)),
        FieldRule("element_list", Kind.ELEMENT_IDS, KLING_VERCEL, bounds=(0, MAX_ELEMENTS), routes=I2V_ONLY),
        FieldRule("callback_url", Kind.TEXT, KLING_API_COPY),
        FieldRule("external_task_id", Kind.TEXT, KLING_API_COPY),
        FieldRule("image", Kind.IMAGE, KLING_V3_I2V, role=Role.IMAGE, routes=I2V_ONLY),
        FieldRule("image_tail", Kind.IMAGE, KLING_V3_I2V, role=Role.END_IMAGE, routes=I2V_ONLY),
    ),
    cross_rules=(
        CrossRule(
            "image", "or image_tail is required", KLING_V3_I2V,
            lambda values, route: route == "i2v" and not values.get("image") and not values.get("image_tail"),
        ),
        CrossRule(
            "image_tail", "cannot be combined with multi_shot", KLING_V3_T2V,
            lambda values, _route: _multi_shot(values) and bool(values.get("image_tail")),
        ),
        CrossRule(
            "voice_list", 'needs sound "on"', KLING_V3_T2V,
            lambda values, _route: bool(values.get("voice_list")) and not values.get("sound"),
        ),
        CrossRule(
            "element_list", "cannot be combined with voice_list", KLING_VERCEL,
            lambda values, _route: bool(values.get("element_list")) and bool(values.get("voice_list")),
        ),
    ),
    # A URL or raw base64; the docs call a data: prefix incorrect (docs/providers.md#kling-images).
    data_uri=False,
    raw_base64=True,
    image_source=KLING_V3_I2V,
)

FAL_HOST_RULES = HostRules(
    # The tier is the path (standard | pro | 4k), so there is no mode field
    # (docs/providers.md#fal-submit-routes).
    fields=(
        FieldRule("prompt", Kind.TEXT, FAL_KLING_V3, role=Role.PROMPT, bounds=(0, PROMPT_MAX)),
        FieldRule(
            "negative_prompt", Kind.TEXT, FAL_KLING_V3, default="blur, distort, and low quality", bounds=(0, PROMPT_MAX)
        ),
        FieldRule(
            "duration", Kind.SECONDS, FAL_KLING_V3, role=Role.DURATION, default=DEFAULT_DURATION,
            bounds=(MIN_DURATION, MAX_DURATION),
        ),
        # [{prompt, duration?: "1".."15" (default "5")}]; the shortest shot is uncertain (1 or 3 s).
        FieldRule(
            "multi_prompt", Kind.SHOTS, FAL_KLING_V3, role=Role.SHOTS,
            shots=ShotFormat(Kind.SECONDS, default_seconds=DEFAULT_DURATION),
        ),
        FieldRule(
            "shot_type", Kind.CHOICE, FAL_KLING_V3, default="customize",
            choices={"customize": "customize", "intelligent": "intelligent"},
        ),
        FieldRule(
            "aspect_ratio", Kind.CHOICE, FAL_KLING_V3, role=Role.ASPECT_RATIO, default="16:9",
            choices={ratio: ratio for ratio in ASPECT_RATIOS}, routes=T2V_ONLY,
        ),
        # Audio is on unless the request turns it off (and is billed so).
        FieldRule("generate_audio", Kind.BOOLEAN, FAL_KLING_V3, role=Role.SOUND, default=True),
        FieldRule("cfg_scale", Kind.NUMBER, FAL_KLING_V3, default=0.5, bounds=(0, 1)),
        FieldRule("elements", Kind.FAL_ELEMENTS, FAL_KLING_V3, routes=I2V_ONLY),
        FieldRule("start_image_url", Kind.IMAGE, FAL_KLING_V3, role=Role.IMAGE, required=True, routes=I2V_ONLY),
        FieldRule("end_image_url", Kind.IMAGE, FAL_KLING_V3, role=Role.END_IMAGE, routes=I2V_ONLY),
    ),
    cross_rules=(
        CrossRule(
            "prompt", "or multi_prompt must be provided, but not both", FAL_KLING_V3,
            lambda values, _route: bool(values.get("prompt")) == bool(values.get("multi_prompt")),
        ),
        CrossRule(
            "end_image_url", "cannot be combined with multi_prompt", FAL_KLING_V3_PAGE,
            lambda values, _route: bool(values.get("end_image_url")) and bool(values.get("multi_prompt")),
        ),
    ),
    # A URL (fal's storage or any public one) or a data URI (docs/providers.md#fal-uploads).
    data_uri=True,
    raw_base64=False,
    image_source=FAL_KLING_V3,
)

REPLICATE_HOST_RULES = HostRules(
    # One model for both routes: a start_image makes it image-to-video
    # (docs/providers.md#replicate-submit-routes).
    fields=(
        FieldRule("prompt", Kind.TEXT, REPLICATE_KLING_V3, role=Role.PROMPT, required=True, bounds=(0, PROMPT_MAX)),
        FieldRule("negative_prompt", Kind.TEXT, REPLICATE_KLING_V3, default="", bounds=(0, PROMPT_MAX)),
        # standard | pro, default pro; 4k came in a later model version:
        # EmulatorConfig.replicate_4k_mode plays either reading.
        FieldRule(
            "mode", Kind.CHOICE, REPLICATE_KLING_V3, role=Role.TIER, default="pro",
            choices={"standard": "std", "pro": "pro", "4k": "4k"}, switched=(("4k", "replicate_4k_mode"),),
        ),
        # Ignored when start_image is given (the clip takes the image's shape).
        FieldRule(
            "aspect_ratio", Kind.CHOICE, REPLICATE_KLING_V3, role=Role.ASPECT_RATIO, default="16:9",
            choices={ratio: ratio for ratio in ASPECT_RATIOS},
        ),
        FieldRule(
            "duration", Kind.INTEGER, REPLICATE_KLING_V3, role=Role.DURATION, default=DEFAULT_DURATION,
            bounds=(MIN_DURATION, MAX_DURATION),
        ),
        FieldRule("generate_audio", Kind.BOOLEAN, REPLICATE_KLING_V3, role=Role.SOUND, default=False),
        # A JSON-encoded string of [{prompt, duration}]: at most 6 shots of at least 1 s, adding up to duration.
        FieldRule(
            "multi_prompt", Kind.SHOTS, REPLICATE_KLING_V3, role=Role.SHOTS,
            shots=ShotFormat(Kind.INTEGER, json_string=True, shortest=1),
        ),
        FieldRule("start_image", Kind.IMAGE, REPLICATE_KLING_V3, role=Role.IMAGE),
        FieldRule("end_image", Kind.IMAGE, REPLICATE_KLING_V3, role=Role.END_IMAGE),
    ),
    cross_rules=(
        CrossRule(
            "end_image", "requires start_image", REPLICATE_KLING_V3,
            lambda values, _route: bool(values.get("end_image")) and not values.get("start_image"),
        ),
    ),
    # A URL (a Replicate file's or any public one) or a data URI (docs/providers.md#replicate-uploads).
    data_uri=True,
    raw_base64=False,
    image_source=REPLICATE_JS,
    refuse_unknown=True,
)


def read_fields(
    rules: HostRules, model: Model, body: Mapping[str, Any], resolve_url: UrlResolver, config: EmulatorConfig
) -> tuple[Submission, dict[str, Any]]:
    """Check ``body`` against ``rules`` for the route ``model.mode`` (``t2v`` | ``i2v``).

    Returns the normalised request and every field read (normalised values, by name), or raises
    :class:`FieldError` naming the field. ``model.tier`` stands unless a field with the ``TIER``
    role names it (Kling's and Replicate's ``mode``). Order: unknown fields (where refused), the
    fields in table order (images only for their type), the cross rules, then the images
    themselves (decoding them is the costly part).
    """
    reader = _HostReader(rules, config)
    listed = [rule for rule in rules.fields if model.mode in rule.routes]
    if rules.refuse_unknown:
        unknown = sorted(set(body) - {rule.name for rule in listed})
        if unknown:
            raise reader.check.error(unknown[0], "is not an input of this model", kind="not_allowed")
    for rule in listed:
        if rule.read_if is None or rule.read_if(reader.values):
            reader.read(rule, body.get(rule.name))
    for cross in rules.cross_rules:
        if cross.broken(reader.values, model.mode):
            raise reader.check.error(cross.field, cross.problem)
    roles = reader.roles
    images = {
        rule.role: reader.check.image(reader.values.get(rule.name), rule.name, resolve_url, required=False)
        for rule in listed
        if rule.kind is Kind.IMAGE
    }
    submission = Submission(
        Model(model.name, roles.get(Role.TIER, model.tier), model.mode),
        roles.get(Role.PROMPT) or None,
        roles.get(Role.SHOTS, ()),
        roles.get(Role.DURATION, DEFAULT_DURATION),
        bool(roles.get(Role.SOUND, False)),
        roles.get(Role.ASPECT_RATIO, "16:9"),
        images.get(Role.IMAGE),
        images.get(Role.END_IMAGE),
        sync=False,
    )
    return submission, reader.values


class _HostReader:
    """Reads the fields of one request, keeping what was read by name and by role."""

    def __init__(self, rules: HostRules, config: EmulatorConfig) -> None:
        self.check = _Checker(rules, True, data_uri=rules.data_uri, raw_base64=rules.raw_base64)
        self.config = config
        self.values: dict[str, Any] = {}
        self.roles: dict[Role, Any] = {}

    def read(self, rule: FieldRule, raw: Any) -> None:
        """Check ``raw`` (``None`` when absent) against ``rule`` and keep its normalised value."""
        if raw is None:
            if rule.required:
                raise self.check.error(rule.name, "is required", kind="missing")
            value = rule.default
        else:
            value = self._READERS[rule.kind](self, rule, raw)
        if value is None:
            return
        self.values[rule.name] = value
        if rule.role is not None:
            self.roles[rule.role] = value

    def _wrong_type(self, name: str, kind: Kind) -> FieldError:
        return self.check.error(name, f"must be {kind.value}", kind="invalid_type")

    def _out_of_bounds(self, name: str, value: float, bounds: tuple[float, float] | None, quote: str = "") -> None:
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            low, high = f"{quote}{bounds[0]:g}{quote}", f"{quote}{bounds[1]:g}{quote}"
            raise self.check.error(name, f"must be between {low} and {high}")

    def _text(self, rule: FieldRule, raw: Any) -> str:
        if not isinstance(raw, str):
            raise self._wrong_type(rule.name, rule.kind)
        if rule.bounds is not None and len(raw) > rule.bounds[1]:
            raise self.check.error(rule.name, f"must not exceed {rule.bounds[1]:g} characters")
        return raw

    def _seconds(self, rule: FieldRule, raw: Any) -> int:
        return self.seconds_text(rule.name, raw, rule.bounds)

    def seconds_text(self, name: str, raw: Any, bounds: tuple[float, float] | None) -> int:
        """``"5"`` -> 5: a string of ASCII digits (an integer is refused, as Kling and fal do)."""
        if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit():
            raise self._wrong_type(name, Kind.SECONDS)
        self._out_of_bounds(name, int(raw), bounds, quote='"')
        return int(raw)

    def _integer(self, rule: FieldRule, raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self._wrong_type(rule.name, rule.kind)
        self._out_of_bounds(rule.name, raw, rule.bounds)
        return raw

    def _number(self, rule: FieldRule, raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise self._wrong_type(rule.name, rule.kind)
        self._out_of_bounds(rule.name, raw, rule.bounds)
        return float(raw)

    def _boolean(self, rule: FieldRule, raw: Any) -> bool:
        if not isinstance(raw, bool):
            raise self._wrong_type(rule.name, rule.kind)
        return raw

    def _choice(self, rule: FieldRule, raw: Any) -> Any:
        switches = dict(rule.switched)
        allowed = {
            text: meaning
            for text, meaning in (rule.choices or {}).items()
            if text not in switches or getattr(self.config, switches[text])
        }
        if not isinstance(raw, str) or raw not in allowed:
            raise self.check.error(rule.name, f"must be one of {', '.join(allowed)}", kind="enum")
        return allowed[raw]

    def _image(self, rule: FieldRule, raw: Any) -> str:
        # Only the type here: the image is decoded after the cross rules (read_fields).
        if not isinstance(raw, str):
            raise self._wrong_type(rule.name, rule.kind)
        return raw

    def _shots(self, rule: FieldRule, raw: Any) -> tuple[Shot, ...]:
        """The host's ``multi_prompt`` as ``[{prompt, duration: int}]``, then the shared shot rules."""
        shape = rule.shots or ShotFormat(Kind.INTEGER)
        if shape.json_string:
            if not isinstance(raw, str):
                raise self.check.error(rule.name, "must be a JSON-encoded string (not an array)", kind="invalid_type")
            try:
                raw = json.loads(raw)
            except ValueError:
                raise self.check.error(rule.name, "must be a JSON-encoded array of {prompt, duration}") from None
        items = raw
        if isinstance(raw, list):
            items = [self._shot(rule.name, index, item, shape) for index, item in enumerate(raw)]
        shortest = shape.shortest if shape.shortest is not None else self.config.min_shot_seconds
        return self.check.shots(items, shortest, self.roles.get(Role.DURATION, DEFAULT_DURATION), self.config)

    def _shot(self, name: str, index: int, item: Any, shape: ShotFormat) -> Any:
        if not isinstance(item, Mapping):
            return item  # the shared rules refuse it, naming the shot
        where = f"{name}[{index}]"
        if shape.indexed and (isinstance(item.get("index"), bool) or not isinstance(item.get("index"), int)):
            raise self.check.error(f"{where}.index", "must be an integer", kind="invalid_type")
        seconds = item.get("duration")
        if seconds is None and shape.default_seconds is not None:
            seconds = shape.default_seconds
        elif shape.seconds is Kind.SECONDS:
            seconds = self.seconds_text(f"{where}.duration", seconds, None)
        return {"prompt": item.get("prompt"), "duration": seconds}

    def _element_ids(self, rule: FieldRule, raw: Any) -> list[int]:
        items = self._list(rule, raw)
        ids = [item.get("element_id") if isinstance(item, Mapping) else None for item in items]
        for index, element_id in enumerate(ids):
            if isinstance(element_id, bool) or not isinstance(element_id, int):
                raise self.check.error(f"{rule.name}[{index}].element_id", "must be an integer", kind="invalid_type")
        return ids

    def _voices(self, rule: FieldRule, raw: Any) -> list[str]:
        items = self._list(rule, raw)
        voices = [item.get("voice_id") if isinstance(item, Mapping) else None for item in items]
        for index, voice in enumerate(voices):
            if not isinstance(voice, str) or not voice:
                raise self.check.error(
                    f"{rule.name}[{index}].voice_id", "must be a non-empty string", kind="invalid_type"
                )
        return voices

    def _fal_elements(self, rule: FieldRule, raw: Any) -> list[Mapping[str, Any]]:
        """fal's elements: optional frontal image, 1-3 reference images, a video (one element at most), a voice."""
        items = self._list(rule, raw)
        for index, item in enumerate(items):
            where = f"{rule.name}[{index}]"
            if not isinstance(item, Mapping):
                raise self.check.error(where, "must be an object", kind="invalid_type")
            for key in ("frontal_image_url", "video_url", "voice_id"):
                if item.get(key) is not None and not isinstance(item[key], str):
                    raise self.check.error(f"{where}.{key}", "must be a string", kind="invalid_type")
            references = item.get("reference_image_urls")
            if references is not None and (
                not isinstance(references, list)
                or not 1 <= len(references) <= 3
                or not all(isinstance(url, str) for url in references)
            ):
                raise self.check.error(f"{where}.reference_image_urls", "must be a list of 1 to 3 URLs")
        if sum(1 for item in items if item.get("video_url")) > 1:
            raise self.check.error(rule.name, "may carry a video_url in one element only")
        return items

    def _list(self, rule: FieldRule, raw: Any) -> list[Any]:
        if not isinstance(raw, list):
            raise self.check.error(rule.name, "must be an array", kind="invalid_type")
        if rule.bounds is not None and len(raw) > rule.bounds[1]:
            raise self.check.error(rule.name, f"must have at most {rule.bounds[1]:g} items")
        return raw

    _READERS: ClassVar[dict[Kind, Callable[[_HostReader, FieldRule, Any], Any]]] = {
        Kind.TEXT: _text,
        Kind.SECONDS: _seconds,
        Kind.INTEGER: _integer,
        Kind.NUMBER: _number,
        Kind.BOOLEAN: _boolean,
        Kind.CHOICE: _choice,
        Kind.IMAGE: _image,
        Kind.SHOTS: _shots,
        Kind.ELEMENT_IDS: _element_ids,
        Kind.VOICES: _voices,
        Kind.FAL_ELEMENTS: _fal_elements,
    }
