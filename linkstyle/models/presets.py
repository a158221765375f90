"""The paper's ImageNet class subsets and their part label sets, selectable by name.

`models.generator.preset: dogs` (and the same for the classifier) sets `class_indices`
(which ImageNet classes, in this order, are the pipeline's classes 0..n-1) and
`class_names`; the part labels are what the few-shot segmenter's masks use
(`tools/label_images.py --preset dogs` writes masks/labels.txt from them).
Sources: the paper's reference code; names are ImageNet's first synonym.
"""

from __future__ import annotations

from dataclasses import dataclass

from linkstyle.core.errors import UserError


@dataclass(frozen=True)
class Preset:
    class_indices: tuple[int, ...]
    class_names: tuple[str, ...]
    part_labels: tuple[str, ...]  # index = label id; 0 is background


PRESETS: dict[str, Preset] = {
    "dogs": Preset((232, 254, 151, 197, 178),
                   ("Border collie", "pug", "Chihuahua", "giant schnauzer", "Weimaraner"),
                   ("background", "leg", "body", "tail", "tongue", "eye", "nose", "snout", "ear", "head")),
    "fungi": Preset((992, 993, 994, 997),
                    ("agaric", "gyromitra", "stinkhorn", "bolete"),
                    ("background", "cap", "stem")),
    "birds": Preset((10, 12, 14, 92, 95, 96),
                    ("brambling", "house finch", "indigo bunting", "bee eater", "jacamar", "toucan"),
                    ("background", "beak", "eye", "head", "leg", "wing", "body", "tail")),
    "cars": Preset((468, 609, 627, 717, 779, 817),
                   ("cab", "jeep", "limousine", "pickup", "school bus", "sports car"),
                   ("background", "shell", "tire", "window")),
}


def preset(name: str, param: str = "preset") -> Preset:
    if name not in PRESETS:
        raise UserError(f"{param}: unknown preset {name!r}; use one of {', '.join(PRESETS)}, "
                        "or give class_indices and class_names")
    return PRESETS[name]


def resolve_classes(preset_name: str | None, class_indices, class_names, param: str):
    """(class_indices, class_names) from a preset, or as given; both or neither with a preset."""
    if preset_name is None:
        return (None if class_indices is None else tuple(int(i) for i in class_indices),
                None if class_names is None else tuple(str(n) for n in class_names))
    if class_indices is not None or class_names is not None:
        raise UserError(f"{param}.preset: a preset sets class_indices and class_names; remove those keys or the preset")
    p = preset(preset_name, f"{param}.preset")
    return p.class_indices, p.class_names
