"""benchmarks/bench_paper_scale.py --scale tiny: the paper-scale benchmark's code path on CPU
(synthesised pool, random OPT model, every pipeline stage), and the JSON it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pool", "embed", "cluster", "target", "select", "train", "evaluate")


def _run_tiny(work, *flags):
    out = work / "out.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_paper_scale.py"), "--scale", "tiny",
         "--workdir", str(work / "work"), "--out", str(out), *flags],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench_paper_scale")
    return _run_tiny(work), work


@pytest.mark.slow
def test_every_stage_reports_seconds_and_peak_memory(tiny):
    result, _ = tiny
    assert result["scale"] == "tiny"
    assert sorted(result["stages"]) == sorted(STAGES)  # the JSON is written with sorted keys
    for name in STAGES:
        stage = result["stages"][name]
        assert stage["seconds"] >= 0, name
        assert stage["peak_rss_mb"] > 0, name
        assert "gpu_peak_mb" in stage, name
    assert result["pipeline_seconds"] == pytest.approx(
        sum(result["stages"][n]["seconds"] for n in STAGES), abs=0.1)
    for name in ("synthesise_pool", "build_model"):
        assert result["setup"][name]["seconds"] >= 0
        assert result["setup"][name]["peak_rss_mb"] > 0


@pytest.mark.slow
def test_tokens_per_second_and_shapes(tiny):
    result, _ = tiny
    tokens = result["tokens"]
    for name in ("embed", "train", "evaluate"):
        assert tokens[name]["tokens"] > 0, name
        assert tokens[name]["tokens_per_s"] > 0, name
    pool = result["pool"]
    assert pool["rows"] == result["stages"]["pool"]["rows"] == result["stages"]["embed"][
        "encoded_rows"]
    # 0.5% of the pool, trained for 3 epochs, like the paper
    assert result["stages"]["select"]["selected"] == round(0.005 * pool["rows"])
    assert tokens["train"]["epochs"] == 3
    assert result["model"]["arch"]["num_hidden_layers"] == 2
    assert result["model"]["weights"].startswith("random")


@pytest.mark.slow
def test_share_of_peak_per_stage_and_the_baseline(tiny):
    """Model FLOP/s of each stage from its tokens/s; on a CPU no peak, so no MFU."""
    result, _ = tiny
    share = result["share_of_peak"]
    params = {"embed": result["tokens"]["embed"]["encoder_parameters"],
              "train": result["model"]["parameters"],
              "evaluate": result["model"]["parameters"]}
    for name, k in (("embed", 2), ("train", 6), ("evaluate", 2)):
        stage = share["stages"][name]
        assert stage["parameters"] == params[name] > 0, name
        assert stage["model_flops_per_s"] == pytest.approx(
            k * params[name] * result["tokens"][name]["tokens_per_s"], rel=1e-6)
    import torch

    if not torch.cuda.is_available():
        assert share["peak"] == "unknown: no GPU"
        assert all(s["mfu_pct"] == "unknown: no GPU" for s in share["stages"].values())
    assert share["baseline"]["stages"]["train"]["mfu_pct"] == 3.56


@pytest.mark.slow
def test_new_batching_flags_run_every_stage(tiny, tmp_path):
    """--pass-tokens, --packing, --embed-batch-tokens and --eval-batch-tokens reach the
    stages (on the Llama layout: OPT's decoder cannot pack) and train the same rows."""
    plain, _ = tiny
    result = _run_tiny(tmp_path, "--layout", "llama", "--pass-tokens", "256", "--packing",
                       "--embed-batch-tokens", "512", "--eval-batch-tokens", "1024")
    assert result["model"]["layout"] == "llama"
    assert abs(result["model"]["parameters"] / plain["model"]["parameters"] - 1) < 0.1
    cfg = result["config"]
    assert (cfg["train"]["pass_tokens"], cfg["train"]["packing"]) == (256, True)
    assert (cfg["embed"]["batch_tokens"], cfg["evaluate"]["batch_tokens"]) == (512, 1024)
    assert sorted(result["stages"]) == sorted(STAGES)
    for name in ("embed", "train", "evaluate"):
        assert result["tokens"][name]["tokens_per_s"] > 0, name
    assert result["stages"]["select"]["selected"] == plain["stages"]["select"]["selected"]
    assert result["tokens"]["train"]["steps"] == plain["tokens"]["train"]["steps"]
    assert result["tokens"]["evaluate"]["tokens"] == plain["tokens"]["evaluate"]["tokens"]


@pytest.mark.slow
def test_gpu_field_says_no_gpu_on_cpu(tiny):
    result, _ = tiny
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert isinstance(result["gpu"], str) and result["gpu"].startswith("no GPU: ")
    assert result["host"]["device"] == "cpu"
    for name in STAGES:
        assert result["stages"][name]["gpu"].startswith("no GPU: ")


@pytest.mark.slow
def test_rerun_resumes_every_stage(tiny):
    """A second invocation on the same work folder redoes nothing and keeps the numbers."""
    first, work = tiny
    out = work / "again.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_paper_scale.py"), "--scale", "tiny",
         "--workdir", str(work / "work"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    for name in STAGES:
        assert "resumed" in again["stages"][name], name
        assert again["stages"][name]["seconds"] == first["stages"][name]["seconds"]
    assert again["pipeline_seconds"] == first["pipeline_seconds"]
    assert again["tokens"]["train"] == first["tokens"]["train"]


def _bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_paper_scale

    return bench_paper_scale


def test_gpu_samples_are_summarised_per_stage():
    """Only the samples taken inside a stage's window count; none at all says so."""
    b = _bench()
    sampler = b.GpuSampler(lambda: (0.0, 0.0))
    sampler.samples = [(10.0, 20.0, 100.0), (11.0, 80.0, 300.0), (12.0, 50.0, 200.0)]
    assert sampler.between(10.5, 12.0) == {"samples": 2, "util_mean_pct": 65.0,
                                           "util_max_pct": 80.0, "memory_used_max_mib": 300.0}
    assert sampler.between(20.0, 30.0).startswith("no samples")


def test_gpu_sampler_thread_samples_and_stops():
    b = _bench()
    sampler = b.GpuSampler(lambda: (42.0, 1.0), interval=0.01)
    sampler.start()
    import time

    time.sleep(0.1)
    sampler.halt.set()
    sampler.join(timeout=5)
    assert not sampler.is_alive() and sampler.samples
    assert all(u == 42.0 for _, u, _ in sampler.samples)


def test_peak_flops_by_device_name():
    b = _bench()
    assert b.peak_flops("NVIDIA H100 80GB HBM3")["flops"] == 989e12
    assert b.peak_flops("NVIDIA H100 80GB HBM3")["peak"].startswith("H100 SXM")
    assert b.peak_flops("NVIDIA H200")["flops"] == 989e12
    assert b.peak_flops("NVIDIA A100-SXM4-40GB")["flops"] == 312e12
    pcie = b.peak_flops("NVIDIA H100 PCIe")  # another peak, not in the table
    assert pcie["flops"] is None and pcie["peak"].startswith("unknown: NVIDIA H100 PCIe")
    assert b.peak_flops(None) == {"flops": None, "peak": "unknown: no GPU"}


def test_share_of_peak_of_the_baseline_run():
    """The earlier H100 run in MFU terms: 6 * 1.315e9 * 4,461 tokens/s / 989e12 = 3.56%
    training, 2 * 1.315e9 * 50.6k / 989e12 = 13.46% evaluation, 0.84% embedding."""
    b = _bench()
    tokens = {"embed": {"tokens_per_s": 1e5}, "train": {"tokens_per_s": "not measured"},
              "evaluate": {"tokens_per_s": 10.0}}
    stages = {"embed": {"gpu": {"util_mean_pct": 12.5}}, "evaluate": {"gpu": "no GPU: x"}}
    share = b.shares(tokens, stages, {"embed": 10**9, "train": 10, "evaluate": 10},
                     "NVIDIA H100 80GB HBM3")
    base = share["baseline"]["stages"]
    assert [base[n]["mfu_pct"] for n in ("train", "evaluate", "embed")] == [3.56, 13.46, 0.84]
    assert base["train"]["gpu_util_mean_pct"] == 17.0
    run = share["stages"]
    assert run["embed"]["mfu_pct"] == 20.22  # 2 * 1e9 * 1e5 / 989e12
    assert run["embed"]["gpu_util_mean_pct"] == 12.5
    assert run["evaluate"]["gpu_util_mean_pct"] is None
    assert run["train"]["mfu_pct"].startswith("unknown")


def test_batching_flags_become_config_settings():
    b = _bench()
    args = b.parse_args(["--scale", "tiny", "--pass-tokens", "4096", "--packing",
                         "--embed-batch-tokens", "16384", "--eval-batch-tokens", "8192"])
    cfg = b.make_config(b.SCALES["tiny"], args, Path("pool"), Path("model"))
    assert (cfg.train.pass_tokens, cfg.train.packing) == (4096, True)
    assert (cfg.embed.batch_tokens, cfg.evaluate.batch_tokens) == (16384, 8192)
    plain = b.make_config(b.SCALES["tiny"], b.parse_args(["--scale", "tiny"]), Path("pool"),
                          Path("model"))
    assert (plain.train.pass_tokens, plain.train.packing, plain.embed.batch_tokens,
            plain.evaluate.batch_tokens) == (None, False, None, None)


def test_no_gpu_probe_says_why(monkeypatch):
    import torch

    b = _bench()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(b.shutil, "which", lambda name: None)
    read, how = b.gpu_probe()
    assert read is None and how.startswith("no GPU: ")


def test_synthesised_pool_repeats_with_distinct_uids_and_prompts(tmp_path, monkeypatch):
    """Copies of the shipped pool: uid#i, prompt prefixed '(i) ', the last copy a sample;
    every uid and prompt distinct, and the pipeline reads the shards as one pool."""
    import coretune.data.sources as sources
    from coretune.data.pool import load_pool

    b = _bench()
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps({"uid": f"u{i}", "task": "t", "prompt": f"p{i}",
                                        "target": "yes"}) + "\n" for i in range(4)))
    monkeypatch.setattr(sources, "build_pool", lambda bigbench: load_pool(base))
    info = b.synthesise_pool(tmp_path / "pool", 10, "sample")
    assert info["copies"] == 3 and info["base_rows"] == 4
    pool = load_pool(tmp_path / "pool")
    uids, prompts = pool.uids, pool.prompts
    assert len(pool) == 10 and len(set(uids)) == 10 and len(set(prompts)) == 10
    assert uids[:4] == ["u0#0", "u1#0", "u2#0", "u3#0"] and prompts[4] == "(1) p0"
    assert all(u.endswith("#2") for u in uids[8:])
    # done once: a second call with the same settings reuses the shards
    stamp = (tmp_path / "pool" / "copy-00000.parquet").stat().st_mtime_ns
    assert b.synthesise_pool(tmp_path / "pool", 10, "sample") == info
    assert (tmp_path / "pool" / "copy-00000.parquet").stat().st_mtime_ns == stamp
