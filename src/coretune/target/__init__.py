"""The target task family's clusters and rows (`clusters`), and where to cut a ranking of
clusters (`cut`)."""

from coretune.target.clusters import (
    METADATA_KINDS,
    METADATA_SHARE,
    PROBE_DENSITY,
    RULES,
    SPEC_HELP,
    VOTES,
    TargetClusters,
    TargetSpec,
    load_target_rows,
    metadata_mask,
    nli_probe_prompts,
    parse_target,
    read_probe_answers,
    read_probe_file,
    target_mask,
)
from coretune.target.cut import (
    COVERAGE,
    DROP_BELOW,
    PI_PROBE_SHARE,
    auto_cut,
    coverage_cut,
    density_order,
    prefix_f1,
    task_step,
)

__all__ = ["COVERAGE", "DROP_BELOW", "METADATA_KINDS", "METADATA_SHARE", "PI_PROBE_SHARE",
           "PROBE_DENSITY", "RULES", "SPEC_HELP", "VOTES", "TargetClusters", "TargetSpec",
           "auto_cut", "coverage_cut", "density_order", "load_target_rows", "metadata_mask",
           "nli_probe_prompts", "parse_target", "prefix_f1", "read_probe_answers",
           "read_probe_file", "target_mask", "task_step"]
