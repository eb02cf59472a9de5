"""Scene registry: each scene owns its 5 quality-level prompts, worst to best (gamma.md §4).

`generic` is the plain Gamma prompt set; the other five are the SDP (scene-specific) sets, verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["GENERIC", "LEVEL_NAMES", "SDP_SCENES", "get_scene", "list_scenes", "register_scene"]

GENERIC = "generic"  # the plain Gamma prompt set's scene name
NUM_LEVELS = 5  # quality levels K, bad to perfect (gamma.md §4)
LEVEL_NAMES = ("bad", "poor", "fair", "good", "perfect")  # the levels' names, worst first (the prompts' order)

_SCENES: dict[str, tuple[str, ...]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_scene(name: str, prompts: Sequence[str], description: str = "") -> None:
    """Register a scene with its prompts.

    Args:
        name: the scene's name, as `--scene` and `scene=` take it; new.
        prompts: 5 non-empty prompts, worst to best (e.g. "bad image" ... "perfect image").
        description: one line for `gamma-iqa list scenes`.

    Raises:
        ValueError: the name is taken, or the prompts are not 5 non-empty strings.
    """
    if name in _SCENES:
        raise ValueError(f"scene {name!r} is already registered")
    prompts = tuple(prompts)
    if len(prompts) != NUM_LEVELS or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"scene {name!r} needs {NUM_LEVELS} non-empty prompts, worst to best; got {prompts!r}")
    _SCENES[name] = prompts
    _DESCRIPTIONS[name] = description


def get_scene(name: str) -> tuple[str, ...]:
    """The 5 prompts of a scene, worst to best.

    Args:
        name: a registered scene name.

    Raises:
        ValueError: an unknown name; the one-line message lists the valid ones.
    """
    try:
        return _SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; valid scenes: {', '.join(_SCENES)}") from None


def list_scenes() -> list[str]:
    """Registered scene names, in registration order (generic first)."""
    return list(_SCENES)


def describe_scene(name: str) -> str:
    """The one-line description of a registered scene (possibly empty).

    Raises:
        ValueError: an unknown name.
    """
    get_scene(name)
    return _DESCRIPTIONS[name]


register_scene(GENERIC, [f"{lv} image" for lv in LEVEL_NAMES], "plain Gamma's prompts, used for every kind of image")
register_scene(
    "natural",
    [f"natural {lv}-quality image" for lv in LEVEL_NAMES],
    "natural photos, synthetic and authentic distortions (LIVE, CSIQ, TID2013, KADID, LIVEC, KonIQ, SPAQ)",
)
register_scene("aigc", [f"AI-generated {lv}-quality image" for lv in LEVEL_NAMES], "AI-generated images (AGIQA-3K)")
register_scene("underwater", [f"underwater {lv}-quality image" for lv in LEVEL_NAMES], "underwater images (UWIQA)")
register_scene("face", [f"face {lv}-quality image" for lv in LEVEL_NAMES], "face images (GFIQA-20k)")
register_scene("aesthetic", [f"natural {lv}-aesthetics image" for lv in LEVEL_NAMES], "image aesthetics (AVA, AADB)")

SDP_SCENES: tuple[str, ...] = ("natural", "aigc", "underwater", "face", "aesthetic")  # gamma.md §4.2, in its order
