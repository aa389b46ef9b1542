"""Reference captions derived from the CIFAR-100 fine and coarse class names.

CIFAR-100 has no captions, so each fine class gets a few short template sentences that name the
class and, in some, its superclass. Every caption contains the readable fine class name as whole
words, which ``caption_names_class`` relies on.
"""

from __future__ import annotations

from hybridcap.datasets.vocabulary import tokenize

# Hand-written phrases for the 20 CIFAR-100 superclasses: (singular with its article, plural).
# The plural is the readable superclass name and is used for fine classes named by a plural noun.
SUPERCLASS_PHRASES: dict[str, tuple[str, str]] = {
    "aquatic_mammals": ("an aquatic mammal", "aquatic mammals"),
    "fish": ("a kind of fish", "fish"),
    "flowers": ("a kind of flower", "flowers"),
    "food_containers": ("a food container", "food containers"),
    "fruit_and_vegetables": ("a fruit or vegetable", "fruit and vegetables"),
    "household_electrical_devices": ("an electrical household device", "household electrical devices"),
    "household_furniture": ("a piece of furniture", "household furniture"),
    "insects": ("a kind of insect", "insects"),
    "large_carnivores": ("a large carnivore", "large carnivores"),
    "large_man-made_outdoor_things": ("a large outdoor structure", "large outdoor structures"),
    "large_natural_outdoor_scenes": ("a natural outdoor scene", "natural outdoor scenes"),
    "large_omnivores_and_herbivores": ("a large herbivore or omnivore", "large herbivores and omnivores"),
    "medium_mammals": ("a medium-sized mammal", "medium-sized mammals"),
    "non-insect_invertebrates": ("an invertebrate", "invertebrates other than insects"),
    "people": ("a person", "people"),
    "reptiles": ("a kind of reptile", "reptiles"),
    "small_mammals": ("a small mammal", "small mammals"),
    "trees": ("a kind of tree", "trees"),
    "vehicles_1": ("a kind of vehicle", "vehicles"),
    "vehicles_2": ("a special-purpose vehicle", "special-purpose vehicles"),
}

# Fine classes named by a plural or mass noun take no article ("a photo of cattle").
PLURAL_CLASS_NAMES = {"cattle"}

# {thing} is the fine class with its article, {kind} the superclass phrase.
CAPTION_TEMPLATES = (
    "a photo of {thing}",
    "a small photo of {thing}",
    "a blurry photo of {thing}",
    "a low resolution image of {thing}",
    "a picture of {thing}, {kind}",
    "a tiny image showing {thing}",
)

# Words that start with a vowel letter pronounced as a consonant ("a unicorn").
_CONSONANT_SOUND_PREFIXES = ("uni", "use", "usu", "eu", "one", "once", "ewe")
# Words that start with a silent "h" ("an hour").
_VOWEL_SOUND_PREFIXES = ("hour", "honest", "honor", "honour", "heir")


def readable_class_name(name: str) -> str:
    """Turn a stored class name into words: ``"aquarium_fish"`` -> ``"aquarium fish"``."""
    return " ".join(name.replace("_", " ").split())


def readable_superclass_name(name: str) -> str:
    """Return the plural phrase of a superclass, e.g. ``"vehicles_1"`` -> ``"vehicles"``."""
    if name in SUPERCLASS_PHRASES:
        return SUPERCLASS_PHRASES[name][1]
    return _fallback_superclass_plural(name)


def indefinite_article(phrase: str) -> str:
    """Return ``"a"`` or ``"an"`` for ``phrase`` by the sound of its first word, using English spelling rules."""
    word = phrase.strip().lower()
    if word.startswith(_VOWEL_SOUND_PREFIXES):
        return "an"
    if word.startswith(_CONSONANT_SOUND_PREFIXES):
        return "a"
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def with_article(name: str) -> str:
    """Return the readable class name with its indefinite article: ``"an aquarium fish"``."""
    readable = readable_class_name(name)
    if name in PLURAL_CLASS_NAMES:
        return readable
    return f"{indefinite_article(readable)} {readable}"


def superclass_phrase(superclass_name: str, plural: bool) -> str:
    """Describe a member of the superclass, e.g. ``"vehicles_1"`` -> ``"a kind of vehicle"``."""
    if superclass_name in SUPERCLASS_PHRASES:
        singular_phrase, plural_phrase = SUPERCLASS_PHRASES[superclass_name]
        return plural_phrase if plural else singular_phrase

    # A superclass outside CIFAR-100: name the group it belongs to.
    readable = _fallback_superclass_plural(superclass_name)
    return readable if plural else f"one of the {readable}"


def build_captions(fine_label_names: list[str], coarse_label_names: list[str], fine_to_coarse: list[int]) -> list[list[str]]:
    """Return the reference captions of every fine class, one list per class, in label order.

    The result depends only on the names and the mapping, so every run gives the same captions.
    """
    captions: list[list[str]] = []
    for fine_label, fine_name in enumerate(fine_label_names):
        thing = with_article(fine_name)
        kind = superclass_phrase(coarse_label_names[fine_to_coarse[fine_label]], plural=fine_name in PLURAL_CLASS_NAMES)
        class_captions: list[str] = []
        for template in CAPTION_TEMPLATES:
            caption = template.format(thing=thing, kind=kind)
            if caption not in class_captions:
                class_captions.append(caption)
        captions.append(class_captions)
    return captions


def caption_names_class(caption: str, fine_name: str) -> bool:
    """Return whether ``caption`` contains the fine class name as whole tokens.

    ``fine_name`` may be stored (``"aquarium_fish"``) or readable (``"aquarium fish"``); both
    are tokenised like the caption, so "sea" does not match "seal" and case does not matter.
    """
    caption_tokens = tokenize(caption)
    name_tokens = tokenize(readable_class_name(fine_name))
    if not name_tokens:
        return False

    width = len(name_tokens)
    return any(caption_tokens[start : start + width] == name_tokens for start in range(len(caption_tokens) - width + 1))


def _fallback_superclass_plural(name: str) -> str:
    # Drop a numeric suffix that only distinguishes two groups, as in "vehicles_1".
    words = readable_class_name(name).split()
    if len(words) > 1 and words[-1].isdigit():
        words = words[:-1]
    return " ".join(words)
