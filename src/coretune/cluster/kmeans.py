"""K-means over prompt embeddings: fit on a seeded sample, label every row in chunks.

Spherical k-means by default: the embeddings are L2-normalised, so cosine is the geometry
that means something (and the one the similarity samplers use); faiss re-normalises the
centroids after each step and assigns by inner product. `spherical=False` gives plain k-means.
Distances reported are Euclidean to the assigned centroid (for unit vectors and a unit
centroid, sqrt(2 - 2 cos)).

Determinism: the sample is drawn with numpy's seeded generator, faiss gets the same seed and
k-means++ seeding, and training runs on one thread (faiss' multi-threaded reductions may sum
in a different order); clusters are renumbered by size, largest first. Same input + seed =>
byte-identical labels.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coretune.errors import CoretuneError
from coretune.io import atomic_path, read_json, write_json
from coretune.validation import check_float32_matrix

# (x, centroids, spherical, chunk rows) -> (labels int64, Euclidean distances float32)
AssignFn = Callable[[np.ndarray, np.ndarray, bool, int], tuple[np.ndarray, np.ndarray]]


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class KMeansClusters:
    """K-means (faiss) with scikit-learn manners.

    Attributes after `fit`: `centroids_` (float32 [k, d]), `labels_` (int64 [n]),
    `distances_` (float32 [n], Euclidean to the centroid), `sizes_` (int64 [k]),
    `sample_indices_` (rows the centroids were fitted on), `inertia_` (faiss objective).
    """

    def __init__(self, k: int, *, seed: int = 0, sample_size: int | None = None,
                 niter: int = 25, spherical: bool = True, chunk_size: int = 65536,
                 train_threads: int | None = 1):
        self.k = k
        self.seed = seed
        self.sample_size = sample_size  # None: 256 points per centroid, faiss' own cap
        self.niter = niter
        self.spherical = spherical
        self.chunk_size = chunk_size
        self.train_threads = train_threads

    def fit(self, x: np.ndarray, assign: AssignFn | None = None) -> KMeansClusters:
        """Fit on a seeded sample, then label every row with `assign` (default: `assign_rows`
        here; a backend may label the chunks elsewhere, with the same chunk boundaries)."""
        import faiss

        n, d = check_float32_matrix(x)
        if not 1 <= self.k <= n:
            raise CoretuneError(f"k={self.k} clusters needs 1 <= k <= the number of rows ({n})",
                                field="k")
        if self.niter < 1:
            raise CoretuneError("must be at least 1", field="niter")
        size = min(n, self.sample_size if self.sample_size is not None else 256 * self.k)
        if size < self.k:
            raise CoretuneError(f"sample size {size} is smaller than k={self.k}",
                                field="sample_size")
        rng = np.random.default_rng(self.seed)
        idx = np.arange(n) if size == n else np.sort(rng.choice(n, size, replace=False))
        sample = np.ascontiguousarray(x[idx], dtype=np.float32)
        km = faiss.Kmeans(d, self.k, niter=self.niter, seed=self.seed % (2**31),
                          spherical=self.spherical, verbose=False,
                          # we sampled already; keep faiss from sub-sampling (or warning)
                          max_points_per_centroid=max(1, -(-size // self.k)) + 1,
                          min_points_per_centroid=1)
        km.cp.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        with faiss_threads(self.train_threads):
            km.train(sample)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        labels, dist = (assign or assign_rows)(x, centroids, self.spherical, self.chunk_size)
        # Renumber by size (largest first, ties by faiss' id): stable, readable reports.
        sizes = np.bincount(labels, minlength=self.k)
        order = np.argsort(-sizes, kind="stable")
        rank = np.empty(self.k, np.int64)
        rank[order] = np.arange(self.k)
        self.centroids_ = centroids[order]
        self.labels_ = rank[labels]
        self.distances_ = dist
        self.sizes_ = sizes[order]
        self.sample_indices_ = idx
        self.inertia_ = float(km.obj[-1]) if len(km.obj) else float("nan")
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid of each row of `x` (int64)."""
        return self.assign(x)[0]

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest centroid, Euclidean distance to it) of each row of `x`."""
        self._fitted()
        _, d = check_float32_matrix(x)
        if d != self.centroids_.shape[1]:
            raise CoretuneError(f"embeddings have {d} dimensions, the centroids "
                                f"{self.centroids_.shape[1]}", field="embeddings")
        return assign_rows(x, self.centroids_, self.spherical, self.chunk_size)

    def report(self, tasks: Sequence[str], families: Sequence[str] | None = None,
               top: int = 3) -> pa.Table:
        """One row per cluster: size, mean distance, top tasks and their shares, purity (share
        of the top task), and the top family with its share when `families` is given."""
        self._fitted()
        if len(tasks) != len(self.labels_):
            raise CoretuneError(f"{len(tasks)} task names for {len(self.labels_)} rows",
                                field="tasks")
        members = cluster_members(self.labels_, self.k)
        cols: dict[str, list] = {k: [] for k in ("cluster", "size", "mean_dist", "top_tasks",
                                                 "top_shares", "purity")}
        if families is not None:
            cols.update(top_family=[], family_share=[])
        for c in range(self.k):
            rows = members[c]
            size = len(rows)
            counts = Counter(tasks[i] for i in rows).most_common(top)
            cols["cluster"].append(c)
            cols["size"].append(size)
            cols["mean_dist"].append(float(self.distances_[rows].mean()) if size else float("nan"))
            cols["top_tasks"].append([t for t, _ in counts])
            cols["top_shares"].append([n / size for _, n in counts])
            cols["purity"].append(counts[0][1] / size if size else 0.0)
            if families is not None:
                fam = Counter(families[i] for i in rows).most_common(1)
                cols["top_family"].append(fam[0][0] if fam else None)
                cols["family_share"].append(fam[0][1] / size if fam else 0.0)
        return pa.table(cols)

    def save(self, folder: str | Path, uids: Sequence[str]) -> Path:
        """`clusters.parquet` (uid, cluster, dist), `centroids.npy`, `kmeans.json`."""
        self._fitted()
        if len(uids) != len(self.labels_):
            raise CoretuneError(f"{len(uids)} uids for {len(self.labels_)} rows", field="uid")
        folder = Path(folder)
        table = pa.table({"uid": pa.array(list(uids), pa.string()),
                          "cluster": pa.array(self.labels_, pa.int64()),
                          "dist": pa.array(self.distances_, pa.float32())})
        with atomic_path(folder / "clusters.parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd")
        with atomic_path(folder / "centroids.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.centroids_, allow_pickle=False)
        write_json(folder / "kmeans.json", {
            "k": self.k, "seed": self.seed, "sample_size": self.sample_size,
            "niter": self.niter, "spherical": self.spherical,
            "fitted_on": len(self.sample_indices_), "inertia": self.inertia_,
        })
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> KMeansClusters:
        folder = Path(folder)
        for name in ("clusters.parquet", "centroids.npy", "kmeans.json"):
            if not (folder / name).is_file():
                raise CoretuneError("file not found", path=folder / name)
        params = read_json(folder / "kmeans.json")
        self = cls(params["k"], seed=params["seed"], sample_size=params["sample_size"],
                   niter=params["niter"], spherical=params["spherical"])
        table = pq.read_table(folder / "clusters.parquet")
        self.centroids_ = np.load(folder / "centroids.npy", allow_pickle=False)
        self.labels_ = table.column("cluster").to_numpy().astype(np.int64)
        self.distances_ = table.column("dist").to_numpy().astype(np.float32)
        self.sizes_ = np.bincount(self.labels_, minlength=self.k)
        self.inertia_ = params.get("inertia", float("nan"))
        self.sample_indices_ = np.empty(0, np.int64)  # not stored
        self.uids_ = table.column("uid").to_pylist()
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise RuntimeError("KMeansClusters is not fitted; call fit(x) first")


def assign_rows(x: np.ndarray, centroids: np.ndarray, spherical: bool, chunk: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid for every row, `chunk` rows at a time (memory: chunk x k floats).
    A row's result depends on the chunk it is searched in (faiss switches between BLAS and
    direct kernels by batch size), so distributed labelling keeps these chunk boundaries."""
    import faiss

    k, d = centroids.shape
    index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    index.add(centroids)
    labels = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float32)
    c_norm2 = (centroids.astype(np.float64) ** 2).sum(1)
    for start in range(0, len(x), chunk):
        part = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
        score, lab = index.search(part, 1)
        lab = lab[:, 0]
        if spherical:  # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c
            sq = (part.astype(np.float64) ** 2).sum(1) + c_norm2[lab] - 2 * score[:, 0]
        else:
            sq = score[:, 0].astype(np.float64)
        labels[start:start + chunk] = lab
        dist[start:start + chunk] = np.sqrt(np.maximum(sq, 0.0))
    return labels, dist


def cluster_members(labels: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(k)]
