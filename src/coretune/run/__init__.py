"""Running a config: the stages and their order (`pipeline`, `stages`), the run folder
(`layout`), stage manifests (`manifest`, `memory`), the run lock (`lock`), the output rule
(`outputs`) and sweeps (`sweep`)."""
