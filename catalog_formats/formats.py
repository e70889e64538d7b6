"""The catalog files the service reads as exported: which columns key a product, name it and hold its images."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from intake.csv_records import column_key


class CellKind(StrEnum):
    #: One URL (Shopify's ``Image Src`` and ``Variant Image``, Google's ``image_link``).
    SINGLE = "single"
    #: URLs separated by commas (WooCommerce's ``Images``).
    LIST = "list"
    #: URLs separated by commas, a comma inside a URL written ``%2C`` (Google's ``additional_image_link``).
    MERCHANT_LIST = "merchant_list"


@dataclass(frozen=True)
class ImageColumn:
    name: str
    kind: CellKind
    #: The most URLs the platform takes in one cell; None: only the service's own limit.
    max_urls: int | None = None


@dataclass(frozen=True)
class CatalogFormat:
    name: str
    label: str
    #: The columns whose first non-empty cell keys a row's product, in order of preference.
    key_columns: tuple[str, ...]
    title_column: str
    image_columns: tuple[ImageColumn, ...]
    #: Columns that must be in the header for a file to be read as this format.
    required_columns: tuple[str, ...]
    #: Rows sharing a key are one product (Shopify); otherwise each key is on one row only.
    rows_share_key: bool = False
    #: The column ordering a product's images, for formats with one image per row.
    position_column: str | None = None
    delimiters: tuple[str, ...] = (",",)

    @property
    def key_label(self) -> str:
        """How the status and the report name the key: its column, or its columns joined."""
        return "/".join(self.key_columns)

    def matches(self, header_keys: set[str]) -> bool:
        return all(column_key(name) in header_keys for name in self.required_columns)


CONTRACT = "contract"
AUTO = "auto"

SHOPIFY = CatalogFormat(
    name="shopify",
    label="Shopify product CSV",
    key_columns=("Handle",),
    title_column="Title",
    image_columns=(ImageColumn("Image Src", CellKind.SINGLE), ImageColumn("Variant Image", CellKind.SINGLE)),
    required_columns=("Handle", "Image Src"),
    rows_share_key=True,
    position_column="Image Position",
)
WOOCOMMERCE = CatalogFormat(
    name="woocommerce",
    label="WooCommerce product CSV",
    key_columns=("ID", "SKU"),
    title_column="Name",
    image_columns=(ImageColumn("Images", CellKind.LIST),),
    required_columns=("Images",),
)
GOOGLE_MERCHANT = CatalogFormat(
    name="google_merchant",
    label="Google Merchant Center feed",
    key_columns=("id",),
    title_column="title",
    image_columns=(
        ImageColumn("image_link", CellKind.SINGLE),
        ImageColumn("additional_image_link", CellKind.MERCHANT_LIST, max_urls=10),
    ),
    required_columns=("id", "image_link"),
    delimiters=(",", "\t"),
)

#: The platform formats, in the order ``auto`` tries them.
PLATFORM_FORMATS: dict[str, CatalogFormat] = {f.name: f for f in (SHOPIFY, GOOGLE_MERCHANT, WOOCOMMERCE)}
INPUT_FORMATS = (AUTO, CONTRACT, *PLATFORM_FORMATS)
#: The contract's columns, which ``auto`` tries first.
CONTRACT_COLUMNS = ("S. No.", "Product Name", "Input Image Urls")


def platform_format(name: str | None) -> CatalogFormat | None:
    """The platform format a request was read as; None for the contract's CSV."""
    return PLATFORM_FORMATS.get(name or CONTRACT)


def recognised(header_cells: list[str]) -> str | None:
    """The format a header names the columns of (the contract's first), or None."""
    keys = {column_key(cell) for cell in header_cells}
    if all(column_key(name) in keys for name in CONTRACT_COLUMNS):
        return CONTRACT
    for catalog_format in PLATFORM_FORMATS.values():
        if catalog_format.matches(keys) and _has_a_key(catalog_format, keys):
            return catalog_format.name
    return None


def names_a_contract_column(header_cells: list[str]) -> bool:
    keys = {column_key(cell) for cell in header_cells}
    return any(column_key(name) in keys for name in CONTRACT_COLUMNS)


def _has_a_key(catalog_format: CatalogFormat, keys: set[str]) -> bool:
    return any(column_key(name) in keys for name in catalog_format.key_columns)


def known_formats_sentence() -> str:
    """The formats ``auto`` knows, with the columns it recognises each by, for a refusal."""
    described = [f"the service's CSV ({', '.join(CONTRACT_COLUMNS)})"]
    for catalog_format in PLATFORM_FORMATS.values():
        keys = " or ".join(catalog_format.key_columns)
        others = [name for name in catalog_format.required_columns if name not in catalog_format.key_columns]
        described.append(f"a {catalog_format.label} ({keys}, {', '.join(others)})")
    return "; ".join(described)


def default_output_mode(input_format: str) -> str:
    """``append`` for the contract's CSV (the ``Output Image Urls`` column, as ever); ``replace`` for a platform's."""
    return "append" if input_format == CONTRACT else "replace"
