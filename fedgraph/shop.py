"""One shop's prepared data: catalog features, per-user training histories, held-out items.

:class:`ShopData` is what a shop's client trains and evaluates on. It is built from the
validated event log (after the temporal split) and the catalog's public item features, and
it is saved as a single ``.npz`` file so a Flower client process can load it quickly.

Histories are stored in CSR form: user ``u``'s distinct training items are
``item[indptr[u]:indptr[u+1]]`` in time order (oldest first), with one edge-feature row each
(:data:`fedgraph.models.EDGE_FEATURES`: recency, log1p quantity, one-hot kind).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedgraph.atomic import atomic_write_bytes

KIND_ORDER = ("view", "cart", "purchase")


class ShopDataError(ValueError):
    """A shop's prepared data file is missing, corrupt or inconsistent."""


@dataclass
class ShopData:
    shop: str
    items: np.ndarray  # [I] str, catalog order
    item_titles: np.ndarray  # [I] str
    item_categories: np.ndarray  # [I] str
    item_features: np.ndarray  # [I, F] float32
    users: np.ndarray  # [U] str
    indptr: np.ndarray  # [U+1] int64
    item: np.ndarray  # [nnz] int64, time-ordered per user
    attr: np.ndarray  # [nnz, 5] float32
    test_indptr: np.ndarray  # [U+1] int64
    test_item: np.ndarray  # [nnz_test] int64
    meta: dict = field(default_factory=dict)
    #: Each user's search queries before its held-out period (latest ``model.search_queries``),
    #: embedded with the item text model: user ``u``'s are rows
    #: ``query_indptr[u]:query_indptr[u+1]`` of ``query_text`` [Q, text_dim] float32, oldest first.
    #: None when built: no queries (data prepared before searches existed has none either).
    query_indptr: np.ndarray | None = None  # [U+1] int64
    query_text: np.ndarray | None = None  # [Q, text_dim] float32
    #: For each query, how many of the user's training items (rows of ``item``, oldest first)
    #: were last touched at or before it: a training row that predicts items from a cut of the
    #: timeline uses only the queries typed before the first item it predicts.
    query_pos: np.ndarray | None = None  # [Q] int64

    def __post_init__(self) -> None:
        if self.query_indptr is None:
            self.query_indptr = np.zeros(len(self.users) + 1, dtype=np.int64)
        if self.query_text is None:
            self.query_text = np.zeros((0, self.text_dim), dtype=np.float32)
        if self.query_pos is None or len(self.query_pos) != len(self.query_text):
            self.query_pos = np.zeros(len(self.query_text), dtype=np.int64)
        if len(self.query_indptr) != len(self.users) + 1 or int(self.query_indptr[-1]) != len(self.query_text):
            raise ShopDataError(
                f"shop {self.shop!r}: query_indptr ({len(self.query_indptr)} entries, last {int(self.query_indptr[-1])}) does not fit "
                f"{len(self.users)} users and {len(self.query_text)} queries"
            )

    # ---------------------------------------------------------------- views
    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return len(self.item)

    def history(self, u: int) -> np.ndarray:
        return self.item[self.indptr[u] : self.indptr[u + 1]]

    def test_items(self, u: int) -> np.ndarray:
        return self.test_item[self.test_indptr[u] : self.test_indptr[u + 1]]

    def queries(self, u: int) -> np.ndarray:
        """User ``u``'s embedded search queries, ``[q, text_dim]``, oldest first."""
        return self.query_text[self.query_indptr[u] : self.query_indptr[u + 1]]

    @property
    def nbytes(self) -> int:
        """Bytes held by the data's arrays (what keeping it in memory costs, roughly)."""
        return int(sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray)))

    def history_lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def text_dim(self) -> int:
        """Width of the text block, the first columns of :attr:`item_features` (the encoder's
        width, recorded by :func:`fedgraph.features.pipeline.shop_data`). Data prepared before
        the width was recorded used MiniLM: 384."""
        from fedgraph.features import LEGACY_TEXT_DIM

        return int(self.meta.get("text_dim", LEGACY_TEXT_DIM))

    def evaluable_users(self) -> np.ndarray:
        """Users with at least one training and one held-out item."""
        return np.flatnonzero((np.diff(self.test_indptr) > 0) & (np.diff(self.indptr) > 0))

    def trainable_users(self) -> np.ndarray:
        """Users with at least two training items (one to predict, one to encode from)."""
        return np.flatnonzero(np.diff(self.indptr) >= 2)

    def without_user(self, user: str) -> ShopData:
        """A copy without ``user``: their row of the histories, of the held-out items and of the
        search queries, and their id (the right to erasure; the catalog and the other users are
        unchanged). A user not in the shop gives an equal copy."""
        return self.select_users(np.flatnonzero(self.users != str(user)))

    def select_users(self, keep: np.ndarray) -> ShopData:
        """A copy holding only the users at indices ``keep``, in that order, each with its own
        histories, held-out items and search queries (the catalog is unchanged)."""
        keep = np.asarray(keep, dtype=np.int64)
        indptr, rows = _ragged_rows(self.indptr, keep)
        test_indptr, test_rows = _ragged_rows(self.test_indptr, keep)
        query_indptr, query_rows = _ragged_rows(self.query_indptr, keep)
        return ShopData(
            shop=self.shop,
            items=self.items,
            item_titles=self.item_titles,
            item_categories=self.item_categories,
            item_features=self.item_features,
            users=self.users[keep],
            indptr=indptr,
            item=self.item[rows],
            attr=self.attr[rows],
            test_indptr=test_indptr,
            test_item=self.test_item[test_rows],
            meta=dict(self.meta),
            query_indptr=query_indptr,
            query_text=self.query_text[query_rows],
            query_pos=self.query_pos[query_rows],
        )

    # ---------------------------------------------------------------- io
    def save(self, path: str | Path) -> Path:
        buffer = io.BytesIO()
        arrays = {k: v for k, v in self.__dict__.items() if k not in ("shop", "meta")}
        np.savez(buffer, shop=np.array(self.shop), meta=np.array(repr(self.meta)), **arrays)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> ShopData:
        path = Path(path)
        if not path.exists():
            raise ShopDataError(f"shop data file {path} does not exist; re-run the data preparation (fedgraph simulate)")
        try:
            with np.load(path, allow_pickle=False) as z:
                fields = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile/ValueError/OSError: all mean the same to the user
            raise ShopDataError(f"shop data file {path} is unreadable ({exc}); delete it and re-run the preparation") from exc
        try:
            import ast

            shop = str(fields.pop("shop"))
            meta = ast.literal_eval(str(fields.pop("meta")))
            data = cls(shop=shop, meta=meta, **fields)
        except (KeyError, TypeError, ValueError, SyntaxError) as exc:
            raise ShopDataError(f"shop data file {path} is incomplete ({exc}); delete it and re-run the preparation") from exc
        return data


def _ragged_rows(indptr: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a ragged table (``indptr`` [U+1]) restricted to rows ``keep``: its new ``indptr`` and
    the positions of the kept entries, in ``keep``'s order."""
    lengths = np.diff(indptr)[keep]
    new = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return new, np.repeat(indptr[keep] - new[:-1], lengths) + np.arange(int(new[-1]), dtype=np.int64)


def edge_attributes(
    users: np.ndarray, last_seconds: np.ndarray, weight: np.ndarray, kind_rank: np.ndarray, *, recency_halflife_days: float
) -> np.ndarray:
    """The features of user-item edges, ``[n, EDGE_FEATURES]``: recency, ``log1p`` weight, one-hot kind.

    The one definition both training (:func:`build_shop_data`) and a shop daemon's serving graph
    (:class:`fedgraph.deploy.shop_state.GraphUpdater`) use. Recency is
    ``exp(-ln 2 · age / halflife)`` with the age measured from the *user's own* latest event
    (``users`` gives each edge's user; any hashable codes), so a user's features depend only on
    that user's events: not on other customers' activity, and not on when they are computed.

    Args:
        users: each edge's user.
        last_seconds: each edge's latest event time, in seconds (any epoch).
        weight: each edge's summed weight.
        kind_rank: each edge's strongest kind, as a position in :data:`KIND_ORDER`.
    """
    from fedgraph.models.interest_model import EDGE_FEATURES

    last = np.asarray(last_seconds, dtype=np.float64)
    own_latest = pd.Series(last).groupby(np.asarray(users)).transform("max").to_numpy()
    age_days = np.clip(own_latest - last, 0, None) / 86400.0
    attr = np.zeros((len(last), EDGE_FEATURES), dtype=np.float32)
    attr[:, 0] = np.exp(-np.log(2.0) * age_days / recency_halflife_days)
    attr[:, 1] = np.log1p(np.asarray(weight, dtype=np.float64))
    attr[np.arange(len(last)), 2 + np.asarray(kind_rank, dtype=np.int64)] = 1.0
    return attr


def build_shop_data(
    shop: str,
    train_events: pd.DataFrame,
    test_events: pd.DataFrame,
    catalog: pd.DataFrame,
    item_features: np.ndarray,
    *,
    recency_halflife_days: float = 60.0,
    searches: pd.DataFrame | None = None,
    search_vectors: np.ndarray | None = None,
    max_queries: int = 16,
) -> ShopData:
    """Assemble :class:`ShopData` for ``shop`` from its split events and catalog rows.

    ``catalog`` rows must be this shop's, in the order of ``item_features``. Events of the
    same (user, item) pair are merged into one edge: summed weight, latest time, strongest
    kind. Recency is measured from the user's own latest training event, so a user's
    features depend only on that user's events. ``searches`` (already restricted to what may
    be used, e.g. before each user's held-out period) with their embedded queries
    ``search_vectors`` (one row each) give each user's latest ``max_queries`` queries; a
    search by a user with no events here is left out.
    """
    items = catalog["item"].to_numpy(dtype=str)
    item_pos = pd.Index(items)
    train = train_events[train_events["shop"] == shop]
    test = test_events[test_events["shop"] == shop]
    users = np.array(sorted(set(train["user"]).union(test["user"])), dtype=str)
    user_pos = pd.Index(users)

    kind_rank = {k: i for i, k in enumerate(KIND_ORDER)}
    grouped = (
        train.assign(kind_rank=train["kind"].map(kind_rank))
        .groupby(["user", "item"], sort=False)
        .agg(weight=("weight", "sum"), last=("timestamp", "max"), kind_rank=("kind_rank", "max"))
        .reset_index()
    )
    grouped["u"] = user_pos.get_indexer(grouped["user"])
    grouped["i"] = item_pos.get_indexer(grouped["item"])
    if (grouped["i"] < 0).any():
        missing = grouped.loc[grouped["i"] < 0, "item"].iloc[0]
        raise ShopDataError(f"shop {shop!r}: item {missing!r} has events but is not in the catalog")
    grouped = grouped.sort_values(["u", "last", "i"], kind="stable")
    # Recency from the user's *own* latest event, never the shop's (user-level DP, see PRIVACY.md).
    seconds = (grouped["last"] - pd.Timestamp("1970-01-01", tz=grouped["last"].dt.tz)).dt.total_seconds().to_numpy()
    attr = edge_attributes(
        grouped["u"].to_numpy(),
        seconds,
        grouped["weight"].to_numpy(),
        grouped["kind_rank"].to_numpy(),
        recency_halflife_days=recency_halflife_days,
    )
    counts = np.bincount(grouped["u"].to_numpy(), minlength=len(users))

    test_pairs = test[["user", "item"]].drop_duplicates()
    tu = user_pos.get_indexer(test_pairs["user"])
    ti = item_pos.get_indexer(test_pairs["item"])
    keep = ti >= 0  # a held-out item must be in the catalog to be recommendable
    order = np.lexsort((ti[keep], tu[keep]))
    tu, ti = tu[keep][order], ti[keep][order]
    test_counts = np.bincount(tu, minlength=len(users))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    query_indptr, query_text, query_pos = _user_queries(shop, user_pos, searches, search_vectors, max_queries, indptr, seconds)

    return ShopData(
        shop=shop,
        items=items,
        item_titles=catalog["title"].to_numpy(dtype=str),
        item_categories=catalog["category"].to_numpy(dtype=str),
        item_features=np.ascontiguousarray(item_features, dtype=np.float32),
        users=users,
        indptr=indptr,
        item=grouped["i"].to_numpy(dtype=np.int64),
        attr=attr,
        test_indptr=np.concatenate([[0], np.cumsum(test_counts)]).astype(np.int64),
        test_item=ti.astype(np.int64),
        meta={"train_events": int(len(train)), "test_events": int(len(test))},
        query_indptr=query_indptr,
        query_text=query_text,
        query_pos=query_pos,
    )


def _user_queries(
    shop: str,
    user_pos: pd.Index,
    searches: pd.DataFrame | None,
    vectors: np.ndarray | None,
    most: int,
    indptr: np.ndarray,
    edge_seconds: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(query_indptr, query_text, query_pos)`` of :func:`build_shop_data` (Nones: no searches);
    ``indptr`` and ``edge_seconds``: the users' training edges, each user's oldest first."""
    if searches is None or vectors is None or len(searches) == 0 or most <= 0:
        return None, None, None
    mine = (searches["shop"] == shop).to_numpy(dtype=bool)
    u = user_pos.get_indexer(searches["user"][mine])
    seconds = (searches["timestamp"][mine] - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    vecs = np.asarray(vectors, dtype=np.float32)[mine]
    known = u >= 0
    u, seconds, vecs = u[known], seconds[known], vecs[known]
    order = np.lexsort((seconds, u))
    u, seconds, vecs = u[order], seconds[order], vecs[order]
    # Keep each user's latest `most`: the position from the end within the user's run.
    ends = np.cumsum(np.bincount(u, minlength=len(user_pos)))[u]
    keep = ends - np.arange(len(u)) <= most
    u, seconds, vecs = u[keep], seconds[keep], vecs[keep]
    # How many of the user's edges (time-ordered) are at or before each query.
    pos = np.array([np.searchsorted(edge_seconds[indptr[x] : indptr[x + 1]], t, side="right") for x, t in zip(u, seconds)], dtype=np.int64)
    counts = np.bincount(u, minlength=len(user_pos))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), np.ascontiguousarray(vecs), pos
