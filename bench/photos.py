"""The benchmark's source photos: scikit-image's sample photos, upscaled to 0.3-12 MP, made once.

Upscaled photos are smoother than a camera's, so they decode and encode faster than real ones of the
same size: the figures are an upper bound for camera photos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "results" / "photos"
# Bumped whenever the list below or the way photos are made changes, so a stale cache is remade.
VERSION = 1


@dataclass(frozen=True)
class PhotoSpec:
    sample: str  #: the skimage.data function
    megapixels: float
    format: str  #: "JPEG" (quality 90) or "PNG"

    @property
    def filename(self) -> str:
        extension = "jpg" if self.format == "JPEG" else "png"
        return f"{self.sample}-{self.megapixels:g}mp.{extension}"


#: A spread from thumbnail to phone camera size; a quarter are PNG, as shop exports often are.
SPECS = (
    PhotoSpec("chelsea", 0.3, "JPEG"),
    PhotoSpec("coffee", 0.5, "PNG"),
    PhotoSpec("rocket", 1.0, "JPEG"),
    PhotoSpec("astronaut", 2.0, "JPEG"),
    PhotoSpec("immunohistochemistry", 2.0, "PNG"),
    PhotoSpec("hubble_deep_field", 3.0, "PNG"),
    PhotoSpec("retina", 4.0, "JPEG"),
    PhotoSpec("coffee", 6.0, "JPEG"),
    PhotoSpec("chelsea", 8.0, "JPEG"),
    PhotoSpec("rocket", 12.0, "JPEG"),
    PhotoSpec("astronaut", 12.0, "JPEG"),
    PhotoSpec("retina", 12.0, "JPEG"),
)

#: A catalog's mix, for the service's cases, in 20 photos served in turn: 30% at their own sizes (0.1-2 MP), 55%
#: at about 2 MP, 10% at about 10 MP and 5% PNG.
CATALOG_SPECS = (
    PhotoSpec("chelsea", 0.135, "JPEG"),
    PhotoSpec("coffee", 0.24, "JPEG"),
    PhotoSpec("astronaut", 0.262, "JPEG"),
    PhotoSpec("rocket", 0.273, "JPEG"),
    PhotoSpec("hubble_deep_field", 0.872, "JPEG"),
    PhotoSpec("retina", 1.99, "JPEG"),
    PhotoSpec("chelsea", 2.0, "JPEG"),
    PhotoSpec("coffee", 2.0, "JPEG"),
    PhotoSpec("astronaut", 2.0, "JPEG"),
    PhotoSpec("rocket", 2.0, "JPEG"),
    PhotoSpec("hubble_deep_field", 2.0, "JPEG"),
    PhotoSpec("immunohistochemistry", 2.0, "JPEG"),
    PhotoSpec("retina", 2.2, "JPEG"),
    PhotoSpec("chelsea", 1.8, "JPEG"),
    PhotoSpec("coffee", 2.2, "JPEG"),
    PhotoSpec("astronaut", 2.2, "JPEG"),
    PhotoSpec("rocket", 1.8, "JPEG"),
    PhotoSpec("astronaut", 10.0, "JPEG"),
    PhotoSpec("rocket", 10.0, "JPEG"),
    PhotoSpec("coffee", 2.0, "PNG"),
)


@dataclass(frozen=True)
class Photo:
    spec: PhotoSpec
    path: Path
    width: int
    height: int
    size: int  #: bytes on disk, i.e. as served


def _make(spec: PhotoSpec, path: Path) -> tuple[int, int]:
    import skimage.data
    from PIL import Image

    source = Image.fromarray(getattr(skimage.data, spec.sample)()).convert("RGB")
    scale = (spec.megapixels * 1e6 / (source.width * source.height)) ** 0.5
    size = (round(source.width * scale), round(source.height * scale))
    photo = source.resize(size, Image.Resampling.LANCZOS)
    if spec.format == "JPEG":
        photo.save(path, "JPEG", quality=90)
    else:
        photo.save(path, "PNG")
    return size


def ensure_photos(folder: Path = CACHE, specs: tuple[PhotoSpec, ...] = SPECS) -> list[Photo]:
    """The photos of ``specs``, generated into ``folder`` the first time (a few seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if index.get("version") != VERSION:
        index = {"version": VERSION, "photos": {}}
    photos = []
    for spec in specs:
        path = folder / spec.filename
        known = index["photos"].get(spec.filename)
        if known is None or not path.exists() or path.stat().st_size != known["size"]:
            width, height = _make(spec, path)
            known = {"width": width, "height": height, "size": path.stat().st_size}
            index["photos"][spec.filename] = known
        photos.append(Photo(spec, path, known["width"], known["height"], known["size"]))
    wanted = {spec.filename for spec in (*SPECS, *CATALOG_SPECS)}
    for stale in [*folder.glob("*.jpg"), *folder.glob("*.png")]:
        if stale.name not in wanted:
            stale.unlink()
    index["photos"] = {name: entry for name, entry in index["photos"].items() if name in wanted}
    index_path.write_text(json.dumps(index, indent=1))
    return photos


def describe(photos: list[Photo]) -> str:
    """One line for the results: what the photos are."""
    jpeg = sum(p.spec.format == "JPEG" for p in photos)
    low = min(p.spec.megapixels for p in photos)
    high = max(p.spec.megapixels for p in photos)
    samples = ", ".join(sorted({p.spec.sample for p in photos}))
    return (
        f"{len(photos)} scikit-image sample photos ({samples}) at {low:g}-{high:g} MP "
        f"(mean {sum(p.width * p.height for p in photos) / len(photos) / 1e6:.1f} MP), {jpeg} JPEG q90 and "
        f"{len(photos) - jpeg} PNG; photos upscaled past their own size are smoother than camera ones, so they"
        " decode and encode faster"
    )
