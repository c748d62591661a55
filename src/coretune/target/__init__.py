"""The target task family's clusters and rows (`clusters`), its settings (`settings`), and
where to cut a ranking of clusters (`cut`)."""

from coretune.target.clusters import (
    METADATA_SHARE,
    PROBE_DENSITY,
    TargetClusters,
    metadata_mask,
    nli_probe_prompts,
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
from coretune.target.settings import (
    METADATA_KINDS,
    SPEC_HELP,
    VOTES,
    TargetConfig,
    TargetSpec,
    parse_target,
)

__all__ = ["COVERAGE", "DROP_BELOW", "METADATA_KINDS", "METADATA_SHARE", "PI_PROBE_SHARE",
           "PROBE_DENSITY", "SPEC_HELP", "VOTES", "TargetClusters", "TargetConfig",
           "TargetSpec", "auto_cut", "coverage_cut", "density_order", "metadata_mask",
           "nli_probe_prompts", "parse_target", "prefix_f1", "read_probe_answers",
           "read_probe_file", "target_mask", "task_step"]
