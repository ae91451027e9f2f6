"""`atldas bench` through atldas.cli.main: params, MACs (FlopCounterMode / 2, meta device), latency."""

from __future__ import annotations

import json

import pytest
import torch

from atldas.cli import main

CHEAPMATTING_PARAMS = 6_023_025
CHEAPMATTING_MACS_1024 = 38_594_117_632


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tiny(tmp_path):
    from derived_models import get_genotype

    g = get_genotype("atldas_cifar100").replace(space={"name": "tiny", "macro": {"C": 8, "layers": 3}})
    return g.save(tmp_path / "tiny.json")


def test_cheapmatting_at_1024_without_latency(tmp_path, capsys):
    p = tmp_path / "bench.json"
    assert main(["bench", "cheapmatting", "--size", "1024", "--no-latency", "--json", str(p)]) == 0
    out = capsys.readouterr().out
    (rec,) = json.loads(p.read_text())
    assert rec["model"] == "cheapmatting"
    assert rec["params"] == CHEAPMATTING_PARAMS
    assert rec["macs"] == CHEAPMATTING_MACS_1024
    assert rec["input"] == [1, 6, 1024, 1024]
    assert rec["latency_ms"] is None and rec["device"] == "cpu"
    assert sum(rec["macs_by_op"].values()) == rec["macs"]
    assert "cheapmatting" in out and "38.594" in out and "6.023" in out
    # --json -: the records on standard output alone, the table on standard error
    assert main(["bench", "cheapmatting", "--size", "1024", "--no-latency", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [rec] and "38.594" in err and "wrote" not in out + err


def test_aematter_counts_attention_matmuls(tmp_path):
    p = tmp_path / "bench.json"
    assert main(["bench", "aematter", "--size", "1024", "--no-latency", "--json", str(p)]) == 0
    (rec,) = json.loads(p.read_text())
    assert rec["params"] == 51_186_044
    assert {"aten.convolution", "aten.bmm"} <= set(rec["macs_by_op"])
    assert sum(rec["macs_by_op"].values()) == rec["macs"]


def test_latency_of_a_small_model(tmp_path, capsys):
    p = tmp_path / "bench.json"
    tiny = _tiny(tmp_path)
    assert main(["bench", str(tiny), "cheapmatting", "--size", "64", "--threads", "1", "--min-run-time", "0.05",
                 "--repeats", "5", "--json", str(p)]) == 0
    records = json.loads(p.read_text())
    assert [r["model"] for r in records] == [str(tiny), "cheapmatting"]
    for rec in records:
        lat = rec["latency_ms"]
        assert set(lat) == {"median", "p10", "p90"}
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"]
        assert rec["input"] == [1, 6, 64, 64] and rec["threads"] == 1
        assert rec["gmacs_per_s"] == pytest.approx(rec["macs"] / (lat["median"] * 1e-3) / 1e9)
        assert rec["ceiling_gmacs_per_s"] > 0 and rec["ceiling_gmacs_per_s"] == records[0]["ceiling_gmacs_per_s"]
    assert records[0]["macs"] < records[1]["macs"] and records[0]["params"] < records[1]["params"]
    out = capsys.readouterr().out
    assert "median [p10, p90]" in out and "GMAC/s" in out and " %)" in out


def test_bench_function_matches_an_independent_count():
    # the closed-form module walker (CheapMatting.macs_at) is gone: bench's count is checked against
    # FlopCounterMode on a real CPU forward, and against the matting space's measure (the figure its
    # cost tables add up to)
    from torch.utils.flop_counter import FlopCounterMode

    from atldas.bench import count_cost
    from atldas.models.zoo import resolve_model
    from atldas.run import bind_space, make_search_config

    model = resolve_model("cheapmatting")
    cost = count_cost(model, size=(96, 160))
    net = model.build().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 6, 96, 160))
    assert cost["macs"] == counter.get_total_flops() // 2
    assert cost["params"] == CHEAPMATTING_PARAMS
    space = bind_space(make_search_config(space="matting", sets=["target_C=48", "target_layers=14",
                                                                 "input_size=96"]))
    g = model.genotype.replace(choices={**{f"decoder{i}": "bottleneck" for i in range(4)}, "head": "conv3x3"})
    assert count_cost(model, size=96)["macs"] == space.measure(g, metric="macs")


@pytest.mark.parametrize("args, words", [
    (["nonesuch", "--no-latency"], "unknown model 'nonesuch'"),
    (["cheapmatting", "--size", "16", "--no-latency"], "at least 32"),
    (["cheapmatting", "--size", "1000000000", "--no-latency"], "at most 65536"),
    (["cheapmatting", "--threads", "0"], "--threads"),
    # nothing is timed: they were ignored without a word
    (["cheapmatting", "--no-latency", "--repeats", "3", "--threads", "1"], "--threads, --repeats set how latency"),
])
def test_bad_arguments(capsys, args, words):
    assert main(["bench", *args]) == 2
    assert words in _error_line(capsys.readouterr().err)


def test_json_never_overwrites_the_genotype_it_benches(tmp_path, capsys):
    from derived_models import get_genotype

    g = get_genotype("darts_v2").save(tmp_path / "g.json")
    before = g.read_bytes()
    assert main(["bench", str(g), "--no-latency", "--size", "64", "--json", str(g)]) == 2
    assert "is one of this command's inputs" in _error_line(capsys.readouterr().err)
    assert g.read_bytes() == before
    run = tmp_path / "run"  # a run directory: its genotype.json is the input, an earlier bench.json is not
    get_genotype("darts_v2").replace(space={"name": "matting", "macro": {"C": 16, "layers": 5}}).save(
        run / "genotype.json")
    assert main(["bench", str(run), "--no-latency", "--size", "64", "--json", str(run / "genotype.json")]) == 2
    assert "is one of this command's inputs" in _error_line(capsys.readouterr().err)
    for _ in range(2):  # written, then rewritten
        assert main(["bench", str(run), "--no-latency", "--size", "64", "--json", str(run / "bench.json")]) == 0
    assert json.loads((run / "bench.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(capsys):
    assert main(["bench", "cheapmatting", "--device", "cuda", "--size", "64"]) == 2
    assert "no CUDA device" in _error_line(capsys.readouterr().err)


def test_bench_warns_on_a_busy_machine(monkeypatch, caplog):
    import os

    from atldas import bench

    monkeypatch.setattr(os, "getloadavg", lambda: (8.0 * (os.cpu_count() or 1), 0.0, 0.0))
    with caplog.at_level("WARNING", logger="atldas"):
        bench.warn_if_busy()
    assert "machine is busy" in caplog.text
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    caplog.clear()
    with caplog.at_level("WARNING", logger="atldas"):
        bench.warn_if_busy()
    assert caplog.text == ""


def test_thread_policy_follows_the_free_cores(monkeypatch):
    import os

    from atldas import cli

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for load, want in ((0.3, 2), (1.2, 1), (7.5, 1)):
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert cli.thread_policy() == want and os.environ["OMP_NUM_THREADS"] == str(want)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept
    assert cli.thread_policy() is None and os.environ["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("argv,notice", [(["derive", "no_such_run"], False), (["plot", "no_such_genotype"], False),
                                         (["eval", "--pred", "p", "--data", "d"], False),
                                         (["bench", "no_such_model", "--no-latency"], True)])
def test_the_busy_notice_only_where_threads_can_answer_it(monkeypatch, caplog, capsys, argv, notice):
    """derive, plot and eval --pred refuse --threads, yet a busy machine told them '--threads N chooses'."""
    import os

    from atldas import cli

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.5, 1.5))
    with caplog.at_level("INFO", logger="atldas"):
        assert cli.main(argv) == 2
    assert ("the machine is busy" in caplog.text) == notice
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
