"""Evaluation: rank classification (`evaluator`) with a batched log-prob scorer (`scoring`)
on registered evaluation sets (`tasks`), and the per-example numbers (`metrics`)."""

from coretune.evaluate.evaluator import TASKS, encoders, evaluate, example_cap, format_row
from coretune.evaluate.metrics import gold_logloss, per_example_accuracy, per_example_logloss
from coretune.evaluate.scoring import Request, score_requests, score_unbatched
from coretune.evaluate.tasks import (
    EVAL_SET_REGISTRY,
    Item,
    build_items,
    eval_sets,
    parse_eval_file,
    register_eval_set,
    resolve_tasks,
)

__all__ = ["EVAL_SET_REGISTRY", "TASKS", "Item", "Request", "build_items", "encoders",
           "eval_sets", "evaluate", "example_cap", "format_row", "gold_logloss", "parse_eval_file",
           "per_example_accuracy", "per_example_logloss", "register_eval_set", "resolve_tasks",
           "score_requests", "score_unbatched"]
