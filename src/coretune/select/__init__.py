"""Selection: pick a budget of rows inside the target clusters.

Methods are classes registered by name in `methods` (`METHOD_REGISTRY`): "kcenter"
(`KCenterGreedy`, the k-center traversal in `kcenter` + `engines`), "random" (uniform without
replacement, `sampling`), "topk" / "leastk" / "mixed" (cosine to the cluster centre,
`similarity`), "all" (every row of the target clusters, in row order; the budget is ignored),
"rds" (RDS+, `rds`), and any method a user registers. `budget` says how many rows and how many
per cluster, `engine` splits the budget, runs a method per cluster and gathers the picks,
`output` writes a subset, `quality` measures one without training, `dedup` drops
near-duplicates.
"""

from coretune.select.budget import resolve_budget, split_budget
from coretune.select.engine import (
    SelectionPlan,
    SelectionResult,
    gather,
    plan_selection,
    select_rows,
)
from coretune.select.kcenter import KCenterGreedy, kcenter_greedy
from coretune.select.methods import (
    METHOD_REGISTRY,
    METHODS,
    ClusterJob,
    SelectionMethod,
    budgeted_methods,
    get_method,
    method_labels,
    method_names,
    register_method,
)
from coretune.validation import check_embeddings

__all__ = ["METHODS", "METHOD_REGISTRY", "ClusterJob", "KCenterGreedy", "SelectionMethod",
           "SelectionPlan", "SelectionResult", "budgeted_methods", "check_embeddings", "gather",
           "get_method", "kcenter_greedy", "method_labels", "method_names", "plan_selection",
           "register_method", "resolve_budget", "select_rows", "split_budget"]
