"""A seeded synthetic federation of shops with planted user interests.

:func:`generate_federation` draws ``n_shops`` shops whose sizes (users, items, events per
user) are log-uniform in the given ranges, so shops differ by orders of magnitude. All
shops share one taxonomy (:data:`TAXONOMY`, 20 categories, each with its own nouns,
materials and phrases, plus adjectives shared by all), so item text carries the category
across shops: an item of ``kitchen`` is titled like "Rustic Oak Cutting Board" and
described as "A rustic oak cutting board for everyday cooking and baking.". Each shop sells
items from 3 to 8 of the categories. Each user has 1-3 planted interest categories with
Dirichlet(1) weights (returned in ``planted``); 90% of the user's events pick a category by
those weights and then an item of it (popular items more often), 10% pick any item of the
shop (noise). Timestamps increase strictly per user; an event is a ``view`` (weight 1) with
probability ``view_fraction``, otherwise a ``cart`` (weight 2, 40%) or a ``purchase``
(weight = quantity >= 1, 60%).

Everything is vectorised numpy/pyarrow: 1,000 shops with ``users_per_shop=(20, 200)``
take about a second, and 10,000 shops with the defaults (about 10^8 events) fit in memory.
The same arguments always give identical frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .schema import CATALOG_COLUMNS, EVENT_COLUMNS, EVENT_KINDS, SEARCH_COLUMNS, STRING_DTYPE, TIMESTAMP_DTYPE, empty_searches

#: Fraction of a user's events that ignore the planted interests (uniform over the shop).
NOISE_FRACTION = 0.1
#: Of the non-view events, the fraction that are carts (the rest are purchases).
CART_SHARE = 0.4
#: Number of categories a shop sells: uniform in [MIN_SHOP_CATEGORIES, MAX_SHOP_CATEGORIES].
MIN_SHOP_CATEGORIES, MAX_SHOP_CATEGORIES = 3, 8
#: Timestamps: each user starts at START + U[0, 365 days); gaps are 1 s + Exp(mean 1 day).
START = np.datetime64("2024-01-01T00:00:00", "s")
MEAN_GAP_SECONDS = 86_400
#: Target number of events generated per internal batch (bounds the peak memory).
_BATCH_EVENTS = 4_000_000
_SPACE = pa.scalar(" ", type=pa.large_string())


class Category(NamedTuple):
    """One category of the shared taxonomy."""

    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    phrases: tuple[str, ...]
    base_price: float


def _c(nouns: str, materials: str, phrases: str, price: float) -> Category:
    return Category(
        tuple(n.strip() for n in nouns.split(",")),
        tuple(m.strip() for m in materials.split(",")),
        tuple(p.strip() for p in phrases.split("|")),
        price,
    )


#: The taxonomy every synthetic shop draws from: category -> nouns, materials, phrases, price.
TAXONOMY: dict[str, Category] = {
    "kitchen": _c(
        "Cutting Board, Mixing Bowl, Utensil Set, Spice Rack, Teapot, Measuring Jug, Rolling Pin, Colander, Apron, Oven Glove",
        "Oak, Bamboo, Ceramic, Steel, Copper, Enamel, Cotton",
        "for everyday cooking and baking|that keeps the kitchen tidy|for the keen home cook",
        12.0,
    ),
    "garden": _c(
        "Planter, Watering Can, Bird Feeder, Trowel, Plant Pot, Garden Kneeler, Seed Tray, Wind Chime, Hose Reel, Plant Label Set",
        "Terracotta, Zinc, Steel, Wicker, Recycled Plastic, Pine",
        "for the garden, balcony or patio|that helps plants and seedlings thrive|for happy gardeners and growers",
        15.0,
    ),
    "toys": _c(
        "Block Set, Rocking Horse, Puzzle, Teddy Bear, Toy Train, Spinning Top, Doll House, Stacking Toy, Marble Run, Jigsaw",
        "Pine, Beech, Felt, Cotton, Wool, Recycled Plastic",
        "for imaginative play at any age|that children love to play with|for hours of playtime fun",
        14.0,
    ),
    "candles": _c(
        "Pillar Candle, Tea Light Set, Scented Candle, Candle Holder, Votive, Wax Melt, Candle Snuffer, Taper Candle",
        "Soy Wax, Beeswax, Glass, Brass, Ceramic",
        "that fills the room with warm candlelight|with a gentle scent and a long, even burn|for cosy evenings by candlelight",
        8.0,
    ),
    "stationery": _c(
        "Notebook, Journal, Pen Set, Desk Organiser, Planner, Pencil Case, Sketchbook, Letter Tray, Bookmark, Greeting Card",
        "Paper, Leather, Canvas, Brass, Bamboo, Recycled Paper",
        "for notes, lists and writing by hand|that keeps the desk and the week organised|for letters, sketches and school",
        6.0,
    ),
    "bath": _c(
        "Bath Towel, Soap Dish, Toothbrush Holder, Bath Mat, Wash Bag, Shower Caddy, Bath Salt Jar, Loofah",
        "Cotton, Bamboo, Ceramic, Linen, Marble, Stoneware",
        "for a relaxing bath or shower|that brings spa calm to the bathroom|for the bathroom shelf",
        10.0,
    ),
    "bedding": _c(
        "Duvet Cover, Pillowcase, Throw Blanket, Cushion, Bedspread, Fitted Sheet, Quilt, Eye Mask",
        "Linen, Cotton, Wool, Velvet, Silk",
        "for a good night's sleep|that makes the bed soft and inviting|for the bedroom and lazy mornings",
        35.0,
    ),
    "lighting": _c(
        "Table Lamp, Floor Lamp, Pendant Shade, String Light, Night Light, Desk Lamp, Wall Sconce, Lampshade",
        "Brass, Copper, Glass, Rattan, Linen, Steel",
        "that casts a soft, warm light|for reading, working and lighting the room|that brightens any dark corner",
        40.0,
    ),
    "jewellery": _c(
        "Necklace, Bracelet, Earring Set, Ring, Brooch, Pendant, Anklet, Charm",
        "Silver, Gold, Brass, Pearl, Enamel, Leather",
        "to wear every day or as a special gift|that adds sparkle to any outfit|in a gift box, ready to give",
        25.0,
    ),
    "bags": _c(
        "Tote Bag, Backpack, Purse, Wallet, Weekend Bag, Shopper, Coin Pouch, Satchel",
        "Leather, Canvas, Cotton, Jute, Velvet",
        "for carrying essentials in style|with room for shopping, books and more|for work, travel and weekends away",
        30.0,
    ),
    "tableware": _c(
        "Dinner Plate, Side Plate, Serving Platter, Mug, Tumbler, Wine Glass, Napkin Set, Cake Stand, Salad Bowl, Jug",
        "Porcelain, Stoneware, Glass, Ceramic, Linen, Marble",
        "for dinner parties and family meals|that dresses the table for guests|for serving food and drinks",
        9.0,
    ),
    "wall decor": _c(
        "Wall Clock, Picture Frame, Mirror, Wall Art Print, Floating Shelf, Coat Hook, Wall Hanging, Calendar",
        "Oak, Walnut, Brass, Glass, Canvas, Rattan",
        "to decorate a bare wall|that brings character to the hallway or living room|for displaying photos and prints",
        22.0,
    ),
    "christmas": _c(
        "Tree Bauble, Advent Calendar, Wreath, Christmas Stocking, Tree Topper, Nativity Set, Garland, Snow Globe",
        "Glass, Felt, Wool, Pine, Paper, Silver",
        "for a festive Christmas tree and home|that brings holiday cheer to the season|to celebrate Christmas with family",
        7.0,
    ),
    "party": _c(
        "Party Bunting, Balloon Set, Cup Set, Party Bag, Cake Topper, Napkin Pack, Party Hat, Confetti Cannon",
        "Paper, Foil, Cotton, Recycled Paper",
        "for birthday parties and celebrations|that makes any party more fun|for weddings, showers and parties",
        4.0,
    ),
    "pets": _c(
        "Dog Bed, Cat Toy, Pet Bowl, Dog Lead, Scratching Post, Pet Blanket, Treat Jar, Collar",
        "Cotton, Leather, Ceramic, Steel, Felt, Jute",
        "for happy dogs and cats|that pets and their owners love|for walks, naps and mealtimes",
        16.0,
    ),
    "baby": _c(
        "Baby Blanket, Muslin Set, Baby Rattle, Bib, Sleepsuit, Soft Toy, Teething Ring, Baby Mobile",
        "Cotton, Bamboo, Wool, Silicone, Felt",
        "for newborns and little ones|that is gentle on a baby's skin|as a baby shower or christening gift",
        13.0,
    ),
    "storage": _c(
        "Storage Basket, Storage Box, Jar Set, Drawer Organiser, Laundry Basket, Shoe Rack, Trinket Box, Hamper",
        "Wicker, Rattan, Canvas, Pine, Glass, Bamboo, Jute",
        "that keeps clutter out of sight|for tidy shelves, cupboards and drawers|to organise and store odds and ends",
        18.0,
    ),
    "outdoor": _c(
        "Picnic Basket, Picnic Blanket, Water Bottle, Lunch Box, Travel Mug, Cool Bag, Camping Lantern, Hammock",
        "Wicker, Steel, Canvas, Cotton, Bamboo",
        "for picnics, hikes and days out|that travels well on camping trips|for lunch on the go and outdoor adventures",
        20.0,
    ),
    "beauty": _c(
        "Reed Diffuser, Room Spray, Hand Cream, Lip Balm, Perfume Bottle, Makeup Bag, Hair Brush, Nail Kit",
        "Glass, Bamboo, Beeswax, Velvet, Ceramic",
        "for a little everyday pampering|with a delicate fragrance|for the dressing table and self-care",
        11.0,
    ),
    "crafts": _c(
        "Knitting Kit, Embroidery Hoop, Paint Set, Sewing Box, Yarn Bundle, Button Jar, Craft Scissors, Ribbon Reel",
        "Wool, Cotton, Bamboo, Wicker, Felt, Steel",
        "for knitting, sewing and making things|that inspires creative craft projects|for crafters, makers and hobbyists",
        12.0,
    ),
}

#: Adjectives shared by every category.
ADJECTIVES: tuple[str, ...] = (
    "Rustic",
    "Vintage",
    "Modern",
    "Classic",
    "Handmade",
    "Scandinavian",
    "Minimalist",
    "Elegant",
    "Colourful",
    "Cosy",
    "Compact",
    "Deluxe",
    "Heritage",
    "Artisan",
    "Everyday",
    "Premium",
    "Retro",
    "Nordic",
    "Bohemian",
    "Sleek",
    "Charming",
    "Sturdy",
    "Whimsical",
    "Timeless",
)

_PROPER = frozenset({"Scandinavian", "Nordic"})  # stay capitalised inside sentences


@dataclass
class SyntheticFederation:
    """Output of :func:`generate_federation`.

    ``events`` and ``catalog`` follow the canonical schema; ``planted`` has one row per
    (shop, user, interest category) with the Dirichlet ``weight`` of that interest (a
    user's weights sum to 1); ``searches`` (:data:`~fedgraph.data.schema.SEARCH_COLUMNS`) the
    planted search queries (none unless ``searches_per_user > 0``).
    """

    events: pd.DataFrame
    catalog: pd.DataFrame
    planted: pd.DataFrame
    searches: pd.DataFrame = field(default_factory=empty_searches)


# --------------------------------------------------------------------------------------
# helpers


def _check_range(name: str, value, *, low: int = 1) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
        ok = tuple(value) == (lo, hi)
    except (TypeError, ValueError):
        ok = False
    if not ok or lo < low or lo > hi:
        raise ValueError(f"{name} must be a pair of integers (low, high) with {low} <= low <= high, got {value!r}")
    return lo, hi


def _log_uniform(rng: np.random.Generator, lo: int, hi: int, size: int) -> np.ndarray:
    """Integers in [lo, hi], log-uniformly distributed."""
    x = np.exp(rng.uniform(np.log(lo), np.log(hi + 1), size=size))
    return np.clip(np.floor(x).astype(np.int64), lo, hi)


def _fixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as a pyarrow large_string array, without Python
    objects per row."""
    numbers = np.asarray(numbers, dtype=np.int64)
    n = len(numbers)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    length = len(head) + width
    buf = np.empty((n, length), dtype=np.uint8)
    buf[:, : len(head)] = head
    x = numbers.copy()
    for k in range(width - 1, -1, -1):
        buf[:, len(head) + k] = 48 + (x % 10)
        x //= 10
    offsets = np.arange(0, (n + 1) * length, length, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


class _IdTable:
    """Fixed-width id strings ``prefix`` + zero-padded 0..n-1 as a byte matrix; ``take``
    gathers rows with numpy (a plain memory copy) and wraps them as a large_string array."""

    def __init__(self, prefix: str, n: int, width: int) -> None:
        arr = _fixed_ids(prefix, np.arange(n), width)
        self.length = len(prefix) + width
        self.rows = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[: n * self.length].reshape(n, self.length)

    def take(self, index: np.ndarray) -> pa.Array:
        buf = self.rows[np.asarray(index, dtype=np.int64)]
        n = len(buf)
        offsets = np.arange(0, (n + 1) * self.length, self.length, dtype=np.int64)
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def _digits(n: int) -> int:
    return len(str(max(int(n) - 1, 0)))


def _strings(chunks: list) -> pd.Series:
    arr = pa.chunked_array(chunks, type=pa.large_string()) if chunks else pa.chunked_array([], type=pa.large_string())
    return pd.Series(pd.array(arr, dtype=STRING_DTYPE), copy=False)


class _Vocab:
    """The taxonomy flattened into pyarrow arrays and per-category offset tables."""

    def __init__(self) -> None:
        self.names = list(TAXONOMY)
        self.n_categories = len(self.names)
        nouns, mats, phrases = [], [], []
        self.noun_off, self.noun_cnt = [], []
        self.mat_off, self.mat_cnt = [], []
        self.phr_off, self.phr_cnt = [], []
        for spec in TAXONOMY.values():
            self.noun_off.append(len(nouns)), self.noun_cnt.append(len(spec.nouns))
            self.mat_off.append(len(mats)), self.mat_cnt.append(len(spec.materials))
            self.phr_off.append(len(phrases)), self.phr_cnt.append(len(spec.phrases))
            nouns += spec.nouns
            mats += spec.materials
            phrases += spec.phrases
        for attr in ("noun_off", "noun_cnt", "mat_off", "mat_cnt", "phr_off", "phr_cnt"):
            setattr(self, attr, np.asarray(getattr(self, attr), dtype=np.int64))
        self.base_price = np.asarray([s.base_price for s in TAXONOMY.values()])
        big = pa.large_string()
        self.adj_title = pa.array(ADJECTIVES, type=big)
        self.adj_lower = pa.array(
            [("an " if a[0].lower() in "aeiou" else "a ") + (a if a in _PROPER else a.lower()) for a in ADJECTIVES],
            type=big,
        )
        # Sentence case: the article is capitalised.
        self.adj_sentence = pa.array([a[0].upper() + a[1:] for a in self.adj_lower.to_pylist()], type=big)
        self.noun_title = pa.array(nouns, type=big)
        self.noun_lower = pa.array([n.lower() for n in nouns], type=big)
        self.mat_title = pa.array(mats, type=big)
        self.mat_lower = pa.array([m.lower() for m in mats], type=big)
        self.phrase = pa.array([p + "." for p in phrases], type=big)
        self.category = pa.array(self.names, type=big)


# --------------------------------------------------------------------------------------
# generator


def generate_federation(
    n_shops: int,
    *,
    seed: int = 0,
    users_per_shop: tuple[int, int] = (20, 2000),
    items_per_shop: tuple[int, int] = (50, 1000),
    events_per_user: tuple[int, int] = (5, 60),
    n_interests_per_user: tuple[int, int] = (1, 3),
    view_fraction: float = 0.5,
    searches_per_user: float = 0.0,
) -> SyntheticFederation:
    """Generate ``n_shops`` synthetic shops (see the module docstring for the model).

    Shop ``k`` is named ``shop-0000k`` (zero-padded to at least 5 digits), its items
    ``i00000``.. and users ``u00000``.. (shop-local, at least 5 digits); event ids are
    ``e0000000``.. over the whole federation. Users, items and events per user are drawn
    log-uniformly per shop/user from the inclusive ranges given. A user's number of
    interests is capped by the number of categories its shop sells. Deterministic for a
    given set of arguments.

    With ``searches_per_user > 0`` each user also searches a Poisson(``searches_per_user``)
    number of times, each query for one of its planted interests (drawn by the interest's
    weight) in that category's words, e.g. "oak cutting board" (a material and a noun; items
    of the category are titled "<adjective> <material> <noun>"), at a time drawn uniformly
    over the user's own events. Searches use a generator of their own, so the events, catalog
    and planted interests are the same with or without them.
    """
    if int(n_shops) != n_shops or n_shops < 1:
        raise ValueError(f"n_shops must be a positive integer, got {n_shops!r}")
    n_shops = int(n_shops)
    u_lo, u_hi = _check_range("users_per_shop", users_per_shop)
    i_lo, i_hi = _check_range("items_per_shop", items_per_shop)
    e_lo, e_hi = _check_range("events_per_user", events_per_user)
    k_lo, k_hi = _check_range("n_interests_per_user", n_interests_per_user)
    if not 0.0 <= float(view_fraction) <= 1.0:
        raise ValueError(f"view_fraction must be in [0, 1], got {view_fraction!r}")

    voc = _Vocab()
    n_cat = voc.n_categories
    rng = np.random.default_rng(seed)

    # ---- phase 1: sizes (global, cheap) -------------------------------------------------
    n_users = _log_uniform(rng, u_lo, u_hi, n_shops)
    n_items = _log_uniform(rng, i_lo, i_hi, n_shops)
    n_shop_cats = rng.integers(MIN_SHOP_CATEGORIES, MAX_SHOP_CATEGORIES + 1, size=n_shops)
    n_shop_cats = np.minimum(n_shop_cats, n_items)
    shop_cats = np.argsort(rng.random((n_shops, n_cat)), axis=1)  # first n_shop_cats[s] used
    total_users = int(n_users.sum())
    user_shop = np.repeat(np.arange(n_shops), n_users)
    n_events = _log_uniform(rng, e_lo, e_hi, total_users)
    events_per_shop = np.bincount(user_shop, weights=n_events, minlength=n_shops).astype(np.int64)
    total_events = int(n_events.sum())

    w_shop = max(5, _digits(n_shops))
    w_item = max(5, _digits(int(n_items.max())))
    w_user = max(5, _digits(int(n_users.max())))
    w_event = max(7, _digits(total_events))

    # Batches of whole shops with about _BATCH_EVENTS events each (depends only on sizes).
    bounds = [0]
    acc = 0
    for s, e in enumerate(events_per_shop):
        acc += int(e)
        if acc >= _BATCH_EVENTS and s + 1 < n_shops:
            bounds.append(s + 1)
            acc = 0
    bounds.append(n_shops)

    user_start = np.concatenate([[0], np.cumsum(n_users)])
    event_start = np.concatenate([[0], np.cumsum(n_events)])
    item_start_global = np.concatenate([[0], np.cumsum(n_items)])

    # Id strings are built once and gathered with take (much cheaper than formatting per row).
    shop_names = _IdTable("shop-", n_shops, w_shop)
    user_names = _IdTable("u", int(n_users.max()), w_user)
    item_names = _IdTable("i", int(n_items.max()), w_item)

    ev_cols: dict[str, list] = {c: [] for c in ("event_id", "shop", "user", "item", "kind")}
    ev_ts: list[np.ndarray] = []
    ev_w: list[np.ndarray] = []
    cat_cols: dict[str, list] = {c: [] for c in ("shop", "item", "title", "description", "category")}
    cat_price: list[np.ndarray] = []
    pl_cols: dict[str, list] = {c: [] for c in ("shop", "user", "category")}
    pl_w: list[np.ndarray] = []
    kinds = pa.array(list(EVENT_KINDS), type=pa.large_string())
    view_i, cart_i, purchase_i = (EVENT_KINDS.index(k) for k in ("view", "cart", "purchase"))

    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        shops = np.arange(b0, b1)
        nb = len(shops)
        k_cats = n_shop_cats[b0:b1]

        # ---- items -----------------------------------------------------------------------
        it_n = n_items[b0:b1]
        it_shop = np.repeat(shops, it_n)  # global shop index per item
        it_local = np.arange(len(it_shop)) - np.repeat(item_start_global[b0:b1] - item_start_global[b0], it_n)
        # Slot (index into the shop's category list): the first k items cover every slot.
        kk = k_cats[it_shop - b0]
        slot = np.where(it_local < kk, it_local, np.floor(rng.random(len(it_shop)) * kk).astype(np.int64))
        it_cat = shop_cats[it_shop, slot]
        adj = rng.integers(0, len(ADJECTIVES), size=len(it_shop))
        noun = voc.noun_off[it_cat] + np.floor(rng.random(len(it_shop)) * voc.noun_cnt[it_cat]).astype(np.int64)
        mat = voc.mat_off[it_cat] + np.floor(rng.random(len(it_shop)) * voc.mat_cnt[it_cat]).astype(np.int64)
        phr = voc.phr_off[it_cat] + np.floor(rng.random(len(it_shop)) * voc.phr_cnt[it_cat]).astype(np.int64)
        price = np.round(voc.base_price[it_cat] * np.exp(rng.normal(0.0, 0.5, size=len(it_shop))), 2)
        price = np.maximum(price, 0.5)
        cat_cols["shop"].append(shop_names.take(it_shop))
        cat_cols["item"].append(item_names.take(it_local))
        cat_cols["title"].append(
            pc.binary_join_element_wise(voc.adj_title.take(adj), voc.mat_title.take(mat), voc.noun_title.take(noun), _SPACE)
        )
        cat_cols["description"].append(
            pc.binary_join_element_wise(
                voc.adj_sentence.take(adj),
                voc.mat_lower.take(mat),
                voc.noun_lower.take(noun),
                voc.phrase.take(phr),
                _SPACE,
            )
        )
        cat_cols["category"].append(voc.category.take(it_cat))
        cat_price.append(price)

        # Items sorted by (shop, slot): the items of slot j of shop s are
        # sorted_items[slot_start[s, j] : slot_start[s, j] + slot_count[s, j]].
        key = (it_shop - b0) * n_cat + slot
        sorted_items = np.argsort(key, kind="stable")
        slot_count = np.bincount(key, minlength=nb * n_cat)
        slot_start = np.concatenate([[0], np.cumsum(slot_count)[:-1]])

        # ---- users and planted interests ---------------------------------------------------
        u0, u1 = user_start[b0], user_start[b1]
        nu = int(u1 - u0)
        us_shop = user_shop[u0:u1]  # global shop index per user
        us_k = k_cats[us_shop - b0]
        n_int = np.minimum(rng.integers(k_lo, k_hi + 1, size=nu), us_k)
        keys = rng.random((nu, n_cat))
        keys[np.arange(n_cat)[None, :] >= us_k[:, None]] = np.inf
        width = min(k_hi, n_cat)
        int_slot = np.argsort(keys, axis=1)[:, :width]
        valid = np.arange(width)[None, :] < n_int[:, None]
        g = rng.gamma(1.0, size=(nu, width)) * valid
        g[valid & (g <= 0)] = 1e-12
        weights = g / g.sum(axis=1, keepdims=True)
        cum_w = np.cumsum(weights, axis=1)
        cum_w[:, -1] = 1.0 + 1e-9
        us_local = np.arange(nu) - (user_start[us_shop] - u0)
        vr, vc = np.nonzero(valid)
        pl_cols["shop"].append(shop_names.take(us_shop[vr]))
        pl_cols["user"].append(user_names.take(us_local[vr]))
        pl_cols["category"].append(voc.category.take(shop_cats[us_shop[vr], int_slot[vr, vc]]))
        pl_w.append(weights[vr, vc])

        # ---- events ------------------------------------------------------------------------
        e0, e1 = event_start[u0], event_start[u1]
        ne = int(e1 - e0)
        ev_user = np.repeat(np.arange(nu), n_events[u0:u1])  # batch-local user index
        ev_shop = us_shop[ev_user]
        r_col = rng.random(ne)
        col = (r_col[:, None] >= cum_w[ev_user]).sum(axis=1)
        col = np.minimum(col, n_int[ev_user] - 1)
        ev_slot = int_slot[ev_user, col]
        r_pick = rng.random(ne)
        cell = (ev_shop - b0) * n_cat + ev_slot
        # Within a category, low positions are popular: position = floor(count * r^2).
        pos = slot_start[cell] + np.floor(slot_count[cell] * r_pick**2).astype(np.int64)
        item_b = sorted_items[np.minimum(pos, len(sorted_items) - 1)]  # batch-local item row
        noise = rng.random(ne) < NOISE_FRACTION
        shop_item0 = item_start_global[ev_shop] - item_start_global[b0]
        noisy_item = shop_item0 + np.floor(rng.random(ne) * n_items[ev_shop]).astype(np.int64)
        item_b = np.where(noise, noisy_item, item_b)
        ev_item_local = it_local[item_b]

        start = rng.integers(0, 365 * 86_400, size=nu)
        gaps = 1 + np.floor(rng.exponential(MEAN_GAP_SECONDS, size=ne)).astype(np.int64)
        csum = np.cumsum(gaps)
        first = event_start[u0:u1] - e0
        before = np.where(first > 0, csum[np.maximum(first - 1, 0)], 0)
        seconds = start[ev_user] + csum - before[ev_user]
        ts = START + seconds.astype("timedelta64[s]")

        r_kind = rng.random(ne)
        kind = np.where(
            r_kind < view_fraction,
            view_i,
            np.where(r_kind < view_fraction + (1 - view_fraction) * CART_SHARE, cart_i, purchase_i),
        )
        quantity = rng.geometric(0.5, size=ne).astype(np.float64)
        weight = np.where(kind == view_i, 1.0, np.where(kind == cart_i, 2.0, quantity))

        ev_cols["event_id"].append(_fixed_ids("e", np.arange(e0, e1), w_event))
        ev_cols["shop"].append(shop_names.take(ev_shop))
        ev_cols["user"].append(user_names.take(us_local[ev_user]))
        ev_cols["item"].append(item_names.take(ev_item_local))
        ev_cols["kind"].append(kinds.take(kind))
        ev_ts.append(ts)
        ev_w.append(weight)

    events = pd.DataFrame(
        {
            "event_id": _strings(ev_cols["event_id"]),
            "shop": _strings(ev_cols["shop"]),
            "user": _strings(ev_cols["user"]),
            "item": _strings(ev_cols["item"]),
            "timestamp": pd.Series(np.concatenate(ev_ts).astype(TIMESTAMP_DTYPE), copy=False),
            "kind": _strings(ev_cols["kind"]),
            "weight": pd.Series(np.concatenate(ev_w), dtype="float64", copy=False),
        },
        copy=False,
    )[EVENT_COLUMNS]
    catalog = pd.DataFrame(
        {
            **{c: _strings(cat_cols[c]) for c in ("shop", "item", "title", "description", "category")},
            "price": pd.Series(np.concatenate(cat_price), dtype="float64", copy=False),
        },
        copy=False,
    )[CATALOG_COLUMNS]
    planted = pd.DataFrame(
        {
            **{c: _strings(pl_cols[c]) for c in ("shop", "user", "category")},
            "weight": pd.Series(np.concatenate(pl_w), dtype="float64", copy=False),
        },
        copy=False,
    )
    searches = _planted_searches(events, planted, voc, searches_per_user, seed) if searches_per_user > 0 else empty_searches()
    return SyntheticFederation(events=events, catalog=catalog, planted=planted, searches=searches)


def _planted_searches(events: pd.DataFrame, planted: pd.DataFrame, voc: _Vocab, rate: float, seed: int) -> pd.DataFrame:
    """Search queries for the planted interests (see :func:`generate_federation`)."""
    rng = np.random.default_rng([int(seed), 14_4])
    span = events.groupby(["shop", "user"], sort=True)["timestamp"].agg(["min", "max"]).reset_index()
    counts = rng.poisson(float(rate), size=len(span))
    who = np.repeat(np.arange(len(span)), counts)
    if len(who) == 0:
        return empty_searches()
    interests = planted.assign(key=planted["shop"].astype(str) + "\x00" + planted["user"].astype(str))
    by_user = interests.groupby("key", sort=False).indices
    user_key = (span["shop"].astype(str) + "\x00" + span["user"].astype(str)).to_numpy()
    names = {name: i for i, name in enumerate(voc.names)}
    texts, times = [], []
    lo = span["min"].to_numpy().astype("int64")
    hi = span["max"].to_numpy().astype("int64")
    for u in who:
        rows = by_user[user_key[u]]
        weights = interests["weight"].to_numpy()[rows]
        category = names[str(interests["category"].iloc[rows[rng.choice(len(rows), p=weights / weights.sum())]])]
        noun = voc.noun_lower[int(voc.noun_off[category] + rng.integers(voc.noun_cnt[category]))].as_py()
        material = voc.mat_lower[int(voc.mat_off[category] + rng.integers(voc.mat_cnt[category]))].as_py()
        texts.append(f"{material} {noun}")
        times.append(lo[u] + int(rng.integers(0, hi[u] - lo[u] + 1)))
    frame = pd.DataFrame(
        {
            "event_id": [f"q{i:07d}" for i in range(len(who))],
            "shop": span["shop"].to_numpy()[who],
            "user": span["user"].to_numpy()[who],
            "timestamp": np.asarray(times, dtype="int64").astype("datetime64[s]"),
            "query": texts,
        }
    )
    return frame.astype({c: STRING_DTYPE for c in ("event_id", "shop", "user", "query")})[SEARCH_COLUMNS]
