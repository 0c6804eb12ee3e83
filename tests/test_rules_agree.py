"""The emulator's rule tables (``emulator/rules.py``) and the providers' (``rules_table``) agree.

The server refuses a request before sending it by its provider's ``rules_table``; the emulator
refuses it by its flavour's ``FlavorRules``. Both are written from the same public sources, and
every end-to-end test trusts the emulator to stand for the provider: if the two tables drifted
apart, the server could send what the emulator refuses (or the reverse) and the tests would
test the wrong thing. Each registered provider is checked against the emulator flavour that
speaks its protocol (its own, or the one its class inherits: the sandbox speaks WaveSpeed's).
"""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route

from kling_video_mcp.emulator import EmulatorConfig
from kling_video_mcp.emulator.app import FLAVOR_CLASSES, create_app
from kling_video_mcp.emulator.rules import FlavorRules, HostRules, Kind, PromptPolicy, Role, ShotStyle
from kling_video_mcp.providers import PROVIDERS, PromptRule, Provider

FLAVORS = {flavor.name: flavor for flavor in FLAVOR_CLASSES}
ROUTES = [(kind, mode) for kind in ("t2v", "i2v") for mode in ("std", "pro", "4k")]
PROMPTS = {PromptRule.REQUIRED: PromptPolicy.REQUIRED, PromptRule.EITHER: PromptPolicy.EITHER, PromptRule.ONE_OF: PromptPolicy.EXACTLY_ONE}


def flavor_of(provider: type[Provider]) -> str:
    """The emulator flavour that speaks ``provider``'s protocol: the nearest class in its MRO with one."""
    for cls in provider.__mro__:
        if getattr(cls, "name", None) in FLAVORS:
            return cls.name
    raise AssertionError(f"{provider.__name__} has no emulator flavour: add emulator/{provider.name}.py (see providers/base.py)")


def emulator_paths() -> dict[str, set[str]]:
    """Every route path the emulator serves, by flavour (``/v3/async/kling-v3.0-4k-t2v``, ...)."""
    paths: dict[str, set[str]] = {}
    for mount in create_app(EmulatorConfig()).routes:
        if isinstance(mount, Mount):
            paths[mount.path.strip("/")] = {route.path for route in mount.routes if isinstance(route, Route)}
    return paths


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda provider: provider.name)
def test_every_route_of_a_provider_is_served_by_its_emulator_flavour(provider):
    served = emulator_paths()[flavor_of(provider)]
    for kind, mode in ROUTES:
        endpoint = provider.endpoint(kind, mode)
        assert any(path.endswith(f"/{endpoint}") for path in served), f"{provider.name} {kind} {mode}: no route for {endpoint}"


def rules_of(provider: type[Provider]) -> FlavorRules | HostRules:
    return FLAVORS[flavor_of(provider)].rules


ROUTE_TABLES = [provider for provider in PROVIDERS if isinstance(rules_of(provider), FlavorRules)]
"""Providers whose flavour keeps a per-route table (Novita, HighwayAPI, WaveSpeed)."""
FIELD_TABLES = [provider for provider in PROVIDERS if isinstance(rules_of(provider), HostRules)]
"""Providers whose flavour checks each field with its source (Kling's own API, fal.ai, Replicate)."""


@pytest.mark.parametrize("provider", ROUTE_TABLES, ids=lambda provider: provider.name)
@pytest.mark.parametrize(("kind", "mode"), ROUTES)
def test_each_route_rule_agrees(provider, kind, mode):
    ours = provider.rules(kind, mode)
    theirs: FlavorRules = FLAVORS[flavor_of(provider)].rules
    route = theirs.policies[(mode, kind)]
    where = f"{provider.name} {mode} {kind} ({ours.source})"
    assert PROMPTS[ours.prompt] is route.prompt, where
    assert ours.multi_prompt is (route.shots is ShotStyle.OBJECTS), where
    if ours.multi_prompt:
        emulator_shortest = route.shortest_shot if route.shortest_shot is not None else EmulatorConfig().min_shot_seconds
        assert ours.shot_seconds.shortest == emulator_shortest, where
    assert ours.shot_type_default == route.shot_type_default, where
    assert ours.shot_type is theirs.wavespeed_fields and ours.element_list is theirs.wavespeed_fields, where
    if kind == "i2v":
        # True: taken; False: refused (the adapter uploads); None: uncertain, which the emulator
        # serves both ways through EmulatorConfig.inline_images_4k_i2v (docs/providers.md).
        expected = {True: True, False: False, None: True}[ours.inline_images]
        assert theirs.inline_images is expected, where
        assert (ours.inline_images is None) == (theirs.inline_images and (mode, kind) == ("4k", "i2v")), where


SHOTS = [{"prompt": "a", "duration": "2"}]


@pytest.mark.parametrize("provider", FIELD_TABLES, ids=lambda provider: provider.name)
def test_each_host_field_rule_agrees(provider):
    """The same questions, asked of a host's field table: what the server checks before sending is
    what the emulator checks on arrival."""
    theirs: HostRules = rules_of(provider)
    for (kind, mode), ours in provider.rules_table.items():
        where = f"{provider.name} {mode} {kind} ({ours.source})"
        listed = {rule.name: rule for rule in theirs.fields if kind in rule.routes}
        shots = next((rule for rule in listed.values() if rule.role is Role.SHOTS), None)
        assert ours.multi_prompt is (shots is not None), where
        if shots is not None:
            assert shots.shots is not None
            assert ours.shot_seconds.shortest == (shots.shots.shortest or EmulatorConfig().min_shot_seconds), where
        assert ours.shot_type is ("shot_type" in listed), where
        assert ours.element_list is any(rule.kind is Kind.ELEMENT_IDS for rule in listed.values()), where
        with_shots = {"prompt": "p", "multi_prompt": SHOTS, "multi_shot": True, "shot_type": "customize"}
        both_refused = any(cross.field == "prompt" and cross.broken(with_shots, kind) for cross in theirs.cross_rules)
        prompt = listed["prompt"]
        read_beside_shots = prompt.read_if is None or prompt.read_if(with_shots)
        if both_refused:
            assert ours.prompt is PromptRule.ONE_OF, where
        elif not read_beside_shots:  # the host ignores a prompt beside shots: we refuse both rather than drop it
            assert ours.prompt in (PromptRule.ONE_OF, PromptRule.EITHER), where
        else:
            assert ours.prompt is (PromptRule.REQUIRED if prompt.required else PromptRule.EITHER), where
        if kind == "i2v" and ours.inline_images:
            assert theirs.raw_base64, where  # what the adapter sends inline: plain base64
        tier = next((rule for rule in listed.values() if rule.role is Role.TIER), None)
        if tier is not None:  # the tier is a field (Kling's, Replicate's mode), not the path (fal's)
            assert tier.choices is not None and mode in tier.choices.values(), where


def test_every_emulator_flavour_stands_for_a_registered_provider():
    assert set(FLAVORS) <= {flavor_of(provider) for provider in PROVIDERS}
