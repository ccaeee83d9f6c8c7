"""The UCI Online Retail data set as a federation of shops.

:func:`load_online_retail` reads the bundled ``online_retail.csv.gz`` (541,909 invoice
lines of a UK gift-ware retailer, 2010-12-01 .. 2011-12-09; CC BY 4.0, DOI
10.24432/C5BW33), cleans it with the rules in :data:`CLEANING_RULES`, maps every remaining
invoice line to one ``purchase`` event, splits the customers into shops by home country
(the UK into ``uk_shards`` hash shards) and builds one catalog per shop. The whole run is
vectorised pandas and takes a few seconds on the full file. ``docs/data.md`` lists the
counts each rule drops and the resulting shop sizes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .loaders import DataFileNotFoundError, DataValidationError, _Text
from .schema import CATALOG_COLUMNS, EVENT_COLUMNS, STRING_DTYPE, TIMESTAMP_DTYPE

#: The bundled copy of the UCI Online Retail data (gzip CSV, 541,909 rows).
BUNDLED_ONLINE_RETAIL: Path = Path(__file__).resolve().parent.parent / "datasets" / "online_retail_uci" / "online_retail.csv.gz"

RAW_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

#: A product StockCode: 5 digits, optionally followed by letters (after upper-casing).
#: Everything else is a non-product code; in the bundled file: POST, DOT, M, C2, D, S,
#: BANK CHARGES, AMAZONFEE, CRUK, DCGSSGIRL, DCGSSBOY, DCGS0003 and other DCGS* codes,
#: GIFT_0001_10..50 (gift vouchers), PADS, B.
PRODUCT_CODE = re.compile(r"\d{5}[A-Z]*")

#: Rows with a UnitPrice above this (GBP) are dropped as price outliers. In the bundled file
#: this removes only the two lines of item 22502 "PICNIC BASKET WICKER 60 PIECES" at
#: 649.50 (a data-entry error: its other lines cost under 10); the dearest real products
#: (kitchen cabinets at 295, sideboards, mirrors) are kept.
MAX_UNIT_PRICE = 300.0

#: A head noun must name at least this many distinct items of the cleaned data set to be a
#: category; rarer head nouns become "other".
MIN_CATEGORY_ITEMS = 15

#: The cleaning rules, applied in this order; ``OnlineRetailData.cleaning`` counts the rows
#: each one drops among the rows the earlier rules kept.
CLEANING_RULES: dict[str, str] = {
    "drop_cancellation": "InvoiceNo starts with 'C' (a cancellation)",
    "drop_nonpositive_quantity": "Quantity <= 0 (returns and stock adjustments)",
    "drop_non_product_code": "StockCode (upper-cased) is not 5 digits optionally followed by letters",
    "drop_missing_customer": "no CustomerID",
    "drop_nonpositive_price": "UnitPrice <= 0",
    "drop_empty_description": "Description empty after stripping whitespace",
    "drop_price_outlier": f"UnitPrice > {MAX_UNIT_PRICE:g} (MAX_UNIT_PRICE)",
    "drop_user_subsample": "user not among the max_users_per_shop kept for its shop",
}

# Words skipped when looking for the head noun (read right to left): colours, sizes,
# packaging words, pattern/theme names and materials that end many descriptions
# ("LUNCH BAG RED RETROSPOT" -> "bag", "CLAM SHELL LARGE" -> "shell").
_COLOURS = (
    "red pink blue green white black cream ivory gold silver purple yellow orange brown grey "
    "gray pastel natural copper lilac turquoise multicolour colour colours coloured"
)
_SIZES = "small large medium mini big jumbo giant tiny tall round square long short"
_FILLER = "set sets of and with in on the for to pack asst asstd assorted design designs size piece pieces"
_THEMES = (
    "retrospot polkadot spot spots spotty dots dotty paisley floral vintage antique retro "
    "spaceboy woodland london christmas xmas girl boy dolly parade garden fancy traditional "
    "french english regency baroque rustic hanging"
)
_MATERIALS = "metal zinc wicker wooden wood enamel ceramic porcelain glass felt fabric paper"
#: Modifier words :func:`head_noun` skips.
MODIFIER_WORDS: frozenset[str] = frozenset(" ".join([_COLOURS, _SIZES, _FILLER, _THEMES, _MATERIALS]).split())

#: The category vocabulary of the bundled file (head nouns naming >= 15 distinct items);
#: ``load_online_retail`` recomputes it from whatever file it reads.
ONLINE_RETAIL_CATEGORIES: frozenset[str] = frozenset(
    """basket bag bell bottle bowl box bracelet candle card case charm clock cover cup cutlery
    decoration dish doily earring flower frame garland heart holder hook jar kit light magnet
    mirror mug necklace notebook parasol plate ring rose sign stand star sticker tag tin
    tissue tray tree wrap""".split()
)


@dataclass
class OnlineRetailData:
    """The result of :func:`load_online_retail`.

    ``events`` and ``catalog`` follow the canonical schema; ``cleaning`` maps
    ``rows_read``, each ``drop_*`` rule of :data:`CLEANING_RULES` and ``kept`` to row
    counts (``rows_read - sum(drops) == kept == len(events)``); ``shops`` has one row per
    shop: shop, countries, users, items, events (largest first).
    """

    events: pd.DataFrame
    catalog: pd.DataFrame
    cleaning: dict[str, int]
    shops: pd.DataFrame
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# categories


def _singular(word: str) -> str:
    if len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if re.search(r"(?:ss|x|ch|sh|zz)es$", word):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def head_noun(description: str) -> str:
    """The head noun of a product description, lower-case and lightly singularised.

    Rule: split the lower-cased text into words (letters, hyphens and apostrophes); read
    them right to left, skip words containing digits, one-letter words and the
    :data:`MODIFIER_WORDS` (colours, sizes, packaging, patterns, materials); the first
    word left, singularised ("holders" -> "holder", "doilies" -> "doily", "boxes" -> "box"),
    is the head noun. ``"other"`` when no word is left.

    >>> head_noun("WHITE HANGING HEART T-LIGHT HOLDER")
    'holder'
    >>> head_noun("LUNCH BAG RED RETROSPOT")
    'bag'
    """
    words = re.split(r"[^a-z0-9'\-]+", str(description).lower())
    for word in reversed(words):
        word = word.strip("'-")
        if len(word) < 2 or any(ch.isdigit() for ch in word) or word in MODIFIER_WORDS:
            continue
        noun = _singular(word)
        if noun in MODIFIER_WORDS:
            continue
        return noun
    return "other"


def category_vocabulary(item_descriptions: Iterable[str], *, min_items: int = MIN_CATEGORY_ITEMS) -> frozenset[str]:
    """Head nouns that name at least ``min_items`` of the given descriptions.

    Pass one description per distinct item (the vocabulary counts items, not rows).
    """
    counts = pd.Series([head_noun(d) for d in item_descriptions], dtype=object).value_counts()
    return frozenset(str(n) for n, c in counts.items() if c >= min_items and n != "other")


def derive_category(description: str, vocabulary: Iterable[str] | None = ONLINE_RETAIL_CATEGORIES) -> str:
    """The interest category of a product: its :func:`head_noun`, or ``"other"`` when that
    noun is not in ``vocabulary`` (default: the bundled file's vocabulary; ``None`` keeps
    every head noun).

    >>> derive_category("WHITE HANGING HEART T-LIGHT HOLDER")
    'holder'
    >>> derive_category("REGENCY CAKESTAND 3 TIER")
    'other'
    """
    noun = head_noun(description)
    if vocabulary is None:
        return noun
    return noun if noun in vocabulary else "other"


# --------------------------------------------------------------------------------------
# helpers


_WORD = re.compile(r"(?<![A-Za-z0-9'])[a-z]+(?:'[a-z]+)?")


def _title_case(text: str) -> str:
    """'DOLLY GIRL'S 60CM T-LIGHT' -> "Dolly Girl's 60cm T-Light"."""
    return _WORD.sub(lambda m: m.group(0).capitalize(), text.lower())


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _slug(country: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", country.lower()).strip("-") or "unknown"


def _take(series: pd.Series, pos: np.ndarray) -> pd.Series:
    return series.iloc[pos].reset_index(drop=True)


def _fail(source: str, **kw) -> DataValidationError:
    return DataValidationError(source, **kw)


# --------------------------------------------------------------------------------------
# main entry point


def load_online_retail(
    path: str | Path | None = None,
    *,
    uk_shards: int = 4,
    min_customers: int = 20,
    max_users_per_shop: int | None = None,
    seed: int = 0,
) -> OnlineRetailData:
    """Load the UCI Online Retail CSV as a federation of shops.

    Parameters
    ----------
    path:
        The CSV (``.csv`` or ``.csv.gz``); default :data:`BUNDLED_ONLINE_RETAIL`.
    uk_shards:
        The United Kingdom's customers are split into this many shops ``uk-1`` ..
        ``uk-<n>`` by a stable hash (SHA-256) of their CustomerID.
    min_customers:
        Every other country with at least this many customers (by home country) is its own
        shop, named by a lower-case slug of the country; the rest form the shop ``other``.
    max_users_per_shop:
        If given, keep at most this many users per shop: those with the smallest
        SHA-256 hash of ``"{seed}:{shop}:{user}"`` (deterministic; a smaller cap keeps a
        subset of a larger one).
    seed:
        Only used by ``max_users_per_shop``.
    """
    if int(uk_shards) != uk_shards or uk_shards < 1:
        raise ValueError(f"uk_shards must be a positive integer, got {uk_shards!r}")
    if int(min_customers) != min_customers or min_customers < 1:
        raise ValueError(f"min_customers must be a positive integer, got {min_customers!r}")
    if max_users_per_shop is not None and (int(max_users_per_shop) != max_users_per_shop or max_users_per_shop < 1):
        raise ValueError(f"max_users_per_shop must be None or a positive integer, got {max_users_per_shop!r}")
    path = Path(path) if path is not None else BUNDLED_ONLINE_RETAIL
    source = path.name
    if not path.exists():
        raise DataFileNotFoundError(
            source,
            expected="the UCI Online Retail CSV",
            found=_Text(f"no file at {path}"),
            fix="Check the path (default: the bundled fedgraph/datasets/online_retail_uci/online_retail.csv.gz).",
        )
    raw = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "Description": str, "Country": str, "InvoiceDate": str},
        keep_default_na=False,
        na_values={"CustomerID": [""], "Quantity": [""], "UnitPrice": [""]},
    )
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise _fail(
            source,
            expected="the UCI Online Retail columns " + ", ".join(RAW_COLUMNS),
            found=_Text("missing column(s) " + ", ".join(f"'{c}'" for c in missing)),
            fix="Pass the original UCI Online Retail CSV.",
        )
    if len(raw) == 0:
        raise _fail(source, expected="at least one data row", found=_Text("no data rows"), fix="Pass the original UCI Online Retail CSV.")
    n_read = len(raw)
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    customer = pd.to_numeric(raw["CustomerID"], errors="coerce")
    invoice = raw["InvoiceNo"].str.strip()
    code = raw["StockCode"].str.strip().str.upper()
    # Strip and collapse inner whitespace ("RETROSPOT CANDLE  LARGE"), on distinct values.
    desc_codes, desc_uniques = pd.factorize(raw["Description"])
    desc_clean = np.array([" ".join(str(d).split()) for d in desc_uniques] + [""], dtype=object)
    desc_empty = pd.Series((desc_clean == "")[desc_codes], index=raw.index)
    # Line number of each row inside its invoice, in file order (before any cleaning), so
    # event ids point back at the raw file whatever the parameters.
    line_no = raw.groupby(invoice, sort=False).cumcount() + 1

    rules = [
        ("drop_cancellation", invoice.str.startswith("C")),
        ("drop_nonpositive_quantity", ~(quantity > 0)),
        ("drop_non_product_code", ~code.str.fullmatch(PRODUCT_CODE.pattern)),
        ("drop_missing_customer", customer.isna()),
        ("drop_nonpositive_price", ~(price > 0)),
        ("drop_empty_description", desc_empty),
        ("drop_price_outlier", price > MAX_UNIT_PRICE),
    ]
    cleaning: dict[str, int] = {"rows_read": n_read}
    alive = np.ones(n_read, dtype=bool)
    for name, drop in rules:
        drop = drop.fillna(True).to_numpy(dtype=bool)
        cleaning[name] = int((alive & drop).sum())
        alive &= ~drop

    pos = np.flatnonzero(alive)
    df = pd.DataFrame(
        {
            "pos": pos,
            "invoice": _take(invoice, pos),
            "line": line_no.to_numpy()[pos],
            "code": _take(code, pos),
            "desc": pd.Series(desc_clean[desc_codes[pos]], dtype=STRING_DTYPE),
            "quantity": quantity.to_numpy(dtype="float64")[pos],
            "price": price.to_numpy(dtype="float64")[pos],
            "customer": _take(customer, pos).astype("int64").astype(STRING_DTYPE),
            "country": _take(raw["Country"], pos).str.strip(),
            "date": _take(raw["InvoiceDate"], pos),
        }
    )
    timestamp = pd.to_datetime(df["date"], format="ISO8601", errors="coerce")
    if timestamp.isna().any():
        i = int(np.flatnonzero(timestamp.isna().to_numpy())[0])
        raise _fail(
            source,
            row=int(df["pos"].iloc[i]) + 1,
            column="InvoiceDate",
            expected="a date like 2010-12-01 08:26:00",
            found=str(df["date"].iloc[i]),
        )
    df["timestamp"] = timestamp.dt.floor("s").astype(TIMESTAMP_DTYPE)

    # Titles and the category vocabulary, over the whole cleaned data (before subsampling)
    # so that every shop and every parameter choice uses the same names.
    desc_counts = (
        df.groupby(["code", "desc"], sort=False)
        .agg(n=("pos", "size"), first=("pos", "min"))
        .reset_index()
        .sort_values(["code", "n", "first"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("code")
    )
    vocabulary = category_vocabulary(desc_counts["desc"])
    item_desc = desc_counts.set_index("code")["desc"]
    unique_desc = pd.unique(item_desc.to_numpy())
    title_of = {d: _title_case(d) for d in unique_desc}
    category_of = {d: derive_category(d, vocabulary) for d in unique_desc}

    # Home country: the country of most of the customer's rows; ties -> first seen.
    home = (
        df.groupby(["customer", "country"], sort=False)
        .agg(n=("pos", "size"), first=("pos", "min"))
        .reset_index()
        .sort_values(["customer", "n", "first"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("customer")
        .set_index("customer")["country"]
    )
    is_uk = home == "United Kingdom"
    other_home = home[~is_uk]
    n_customers = other_home.value_counts()
    big = set(n_customers[n_customers >= min_customers].index)
    shop_of = pd.Series(index=home.index, dtype=object)
    shop_of[is_uk] = [f"uk-{_stable_hash(c) % uk_shards + 1}" for c in home.index[is_uk]]
    shop_of[~is_uk] = [(_slug(c) if c in big else "other") for c in other_home]
    df["shop"] = df["customer"].map(shop_of)

    kept_users = shop_of
    if max_users_per_shop is not None:
        users = shop_of.rename("shop").rename_axis("user").reset_index()
        users["key"] = [_stable_hash(f"{seed}:{s}:{u}") for s, u in zip(users["shop"], users["user"])]
        users = users.sort_values(["shop", "key", "user"], kind="stable")
        users = users[users.groupby("shop", sort=False).cumcount() < max_users_per_shop]
        kept_users = users.set_index("user")["shop"]
    keep = df["customer"].isin(kept_users.index).to_numpy()
    cleaning["drop_user_subsample"] = int((~keep).sum())
    df = df[keep]
    cleaning["kept"] = int(len(df))

    df = df.sort_values(["shop", "pos"], kind="stable").reset_index(drop=True)
    events = pd.DataFrame(
        {
            "event_id": (df["invoice"] + "-" + df["line"].astype(str)).astype(STRING_DTYPE),
            "shop": df["shop"].astype(STRING_DTYPE),
            "user": df["customer"].astype(STRING_DTYPE),
            "item": df["code"].astype(STRING_DTYPE),
            "timestamp": df["timestamp"],
            "kind": pd.Series("purchase", index=df.index, dtype=STRING_DTYPE),
            "weight": df["quantity"].astype("float64"),
        }
    )[EVENT_COLUMNS]

    catalog = df.groupby(["shop", "code"], sort=True)["price"].median().rename("price").reset_index()
    titles_src = catalog["code"].map(item_desc)
    catalog = pd.DataFrame(
        {
            "shop": catalog["shop"].astype(STRING_DTYPE),
            "item": catalog["code"].astype(STRING_DTYPE),
            "title": titles_src.map(title_of).astype(STRING_DTYPE),
            "description": pd.Series("", index=catalog.index, dtype=STRING_DTYPE),
            "category": titles_src.map(category_of).astype(STRING_DTYPE),
            "price": catalog["price"].astype("float64"),
        }
    )[CATALOG_COLUMNS]

    shop_countries = (
        pd.DataFrame({"shop": kept_users.to_numpy(), "country": home.loc[kept_users.index].to_numpy()})
        .groupby("shop")["country"]
        .agg(lambda s: ", ".join(s.value_counts().sort_index().sort_values(ascending=False, kind="stable").index))
    )
    shops = df.groupby("shop").agg(users=("customer", "nunique"), items=("code", "nunique"), events=("pos", "size")).reset_index()
    shops.insert(1, "countries", shops["shop"].map(shop_countries))
    shops = shops.sort_values(["users", "shop"], ascending=[False, True], kind="stable").reset_index(drop=True)
    shops["shop"] = shops["shop"].astype(STRING_DTYPE)
    shops["countries"] = shops["countries"].astype(STRING_DTYPE)
    for c in ("users", "items", "events"):
        shops[c] = shops[c].astype("int64")

    return OnlineRetailData(
        events=events,
        catalog=catalog,
        cleaning=cleaning,
        shops=shops,
        params=dict(
            path=str(path),
            uk_shards=uk_shards,
            min_customers=min_customers,
            max_users_per_shop=max_users_per_shop,
            seed=seed,
            max_unit_price=MAX_UNIT_PRICE,
            min_category_items=MIN_CATEGORY_ITEMS,
            categories=sorted(vocabulary),
        ),
    )
