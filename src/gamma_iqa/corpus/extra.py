"""Photographs from other packages than gcompris-qt-data that gamma-lite's corpus adds, with their licences.

scikit-image (the `corpus` extra's dependency) ships four colour photographs of real scenes in `skimage/data/`, none of
them in scripts/evaluate_default.py's evaluation set (Debian `mate-backgrounds`, `kphotoalbum`, `opencv-doc`). Their
licences are those its `skimage.data` docstrings state. Its other colour images are not used: renders and charts
(`colorwheel`, `logo`, `color`), microscopy and medical images (`ihc`, `retina`, `cell`), astronomy
(`hubble_deep_field`) and rectified stereo pairs (`motorcycle_*`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SCIKIT_IMAGE_PHOTOS", "ExtraPhoto", "scikit_image_photos"]


@dataclass(frozen=True)
class ExtraPhoto:
    """A source photo from outside gcompris-qt-data.

    Attributes:
        id: Its id in the corpus (file stem of reference/<id>.png), prefixed by its source (`skimage_`).
        source: Where it came from (package and path), for licences.csv.
        data: The file's bytes.
        licence: Its licence, as its source states it.
        holder: Its copyright holder or author.
    """

    id: str
    source: str
    data: bytes
    licence: str
    holder: str


# file in skimage/data -> (licence, holder), from the skimage.data docstrings (scikit-image 0.2x)
SCIKIT_IMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut.png": ("public-domain", "NASA (Eileen Collins)"),
    "chelsea.png": ("CC0", "Stefan van der Walt"),
    "coffee.png": ("CC0", "Rachel Michetti"),
    "rocket.jpg": ("public-domain", "SpaceX"),
}


def scikit_image_photos() -> list[ExtraPhoto]:
    """The photos of SCIKIT_IMAGE_PHOTOS from the installed scikit-image, ids `skimage_<stem>`.

    Raises:
        ModuleNotFoundError: scikit-image is not installed (`pip install 'gamma-iqa[corpus]'`).
        FileNotFoundError: one of the files is missing from this scikit-image.
    """
    import skimage  # the corpus extra; imported here so that the corpus module itself does not need it

    folder = Path(skimage.__file__).parent / "data"
    return [
        ExtraPhoto(f"skimage_{name.rsplit('.', 1)[0]}", f"scikit-image {skimage.__version__}: skimage/data/{name}",
                   (folder / name).read_bytes(), licence, holder)
        for name, (licence, holder) in SCIKIT_IMAGE_PHOTOS.items()
    ]  # fmt: skip
