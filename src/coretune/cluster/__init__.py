"""K-means over prompt embeddings (`kmeans`)."""

from coretune.cluster.kmeans import (
    AssignFn,
    KMeansClusters,
    assign_rows,
    cluster_members,
    faiss_threads,
)

__all__ = ["AssignFn", "KMeansClusters", "assign_rows", "cluster_members", "faiss_threads"]
