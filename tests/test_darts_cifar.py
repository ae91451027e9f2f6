"""The ``darts_cifar`` space: published cells at their published size, an exact cost table, supernet
forward in every mode, synthetic and folder data, and a short search through the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atldas.cost import cost_table
from atldas.data.shapes import CLASS_NAMES, ImageFolderSplit, SyntheticShapes
from atldas.errors import DataError
from atldas.genotype import Genotype
from atldas.models.darts_cifar import DartsCifarNetwork
from atldas.run import SearchConfig, bind_space, make_search_config
from atldas.tasks import get_task
from atldas.tasks.classification import ClassificationTask
from search_spaces import get_space
from search_spaces.darts_cifar import DARTS_CIFAR, DartsCifarSuperNet

# reference/genotypes.json, copied to tests/data (tests do not read the shared folder)
REFERENCE = json.loads((Path(__file__).parent / "data" / "genotypes.json").read_text())

# measured at C=36, 20 cells, 10 classes, no auxiliary head; MACs = FlopCounterMode / 2 at 1x3x32x32
PUBLISHED_SIZE = {
    "DARTS_V2": (3_349_342, 528_359_040),        # DARTS paper: 3.3 M
    "PC_DARTS_cifar": (3_634_678, 556_670_592),  # PC-DARTS paper: 3.6 M
    "ATLDAS_cifar100": (3_825_190, 596_124_288),
}
AUX_PARAMS = 476_426  # DARTS' auxiliary head on 576 channels, 10 classes


def genotype(name: str) -> Genotype:
    return Genotype.from_darts_dict(REFERENCE[name])


@pytest.fixture(scope="module")
def cfg() -> SearchConfig:
    return make_search_config(space="darts_cifar")


@pytest.fixture(scope="module")
def space(cfg):
    return bind_space(cfg)


def _bound(cfg: SearchConfig, *, data=None, **knobs):
    """The darts_cifar space bound to ``cfg``'s knobs with ``knobs`` replaced (and ``data``, if given)."""
    return bind_space(dataclasses.replace(cfg, knobs=dataclasses.replace(cfg.knobs, **knobs),
                                          data=cfg.data if data is None else data))


def _datasets(data):
    """The classification task's (train, arch) splits of ``data``, one epoch's worth each."""
    return get_task("classification").datasets(data, seed=0, n_train=2 * data.batch_size, n_arch=2 * data.batch_size)


def test_registered_with_its_defaults(cfg, space):
    assert get_space("darts_cifar") is DARTS_CIFAR
    assert DARTS_CIFAR.task == "classification" and cfg.task == "classification"
    assert isinstance(get_task(cfg.task), ClassificationTask)
    k = cfg.knobs
    assert (k.C, k.layers, k.target_C, k.target_layers, k.input_size, cfg.data.crop) == (16, 8, 36, 20, 32, 32)
    assert space.input_shape() == (1, 3, 32, 32)
    assert space.block_names() == {} and space.block_candidates() == {}


def test_darts_v2_has_the_published_parameter_count():
    with torch.device("meta"):
        net = DartsCifarNetwork(genotype=genotype("DARTS_V2"), C=36, layers=20)
        aux = DartsCifarNetwork(genotype=genotype("DARTS_V2"), C=36, layers=20, auxiliary=True)
    n = sum(p.numel() for p in net.parameters())
    assert n == net.num_params() == 3_349_342
    assert abs(n - 3.3e6) <= 0.1e6  # DARTS (ICLR 2019), Table 1: 3.3 M
    # DARTS counts without the auxiliary head
    assert aux.num_params() == n and sum(p.numel() for p in aux.parameters()) == n + AUX_PARAMS


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZE))
def test_published_cells_params_and_macs(name, space):
    params, macs = PUBLISHED_SIZE[name]
    g = genotype(name)
    assert space.measure(g, metric="params") == params
    assert space.measure(g, metric="macs") == macs


def test_darts_state_dict_names():
    net = DartsCifarNetwork(genotype=genotype("DARTS_V2"), C=4, layers=5, auxiliary=True)
    names = set(net.state_dict())
    for key in ("stem.0.weight", "stem.1.running_mean", "cells.0.preprocess0.op.1.weight",
                "cells.0._ops.0.op.1.weight", "cells.2.preprocess0.conv_1.weight",
                "auxiliary_head.features.2.weight", "auxiliary_head.classifier.weight",
                "classifier.weight"):
        assert key in names, key


def test_network_forward_with_and_without_auxiliary_head():
    torch.manual_seed(0)
    net = DartsCifarNetwork(genotype=genotype("PC_DARTS_cifar"), C=4, layers=5, num_classes=7,
                            auxiliary=True, drop_path_prob=0.2)
    x = torch.rand(2, 3, 32, 32)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 7)
    out = net.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    plain = DartsCifarNetwork(genotype=genotype("PC_DARTS_cifar"), C=4, layers=5).train()
    assert plain(x).shape == (2, 10)


def test_cell_geometry_of_the_target(space):
    geo = space.cell_geometry()
    assert len(geo) == 20
    assert [k for k, g in enumerate(geo) if g.reduction] == [6, 13]
    assert (geo[0].C, geo[0].H) == (36, 32)
    assert (geo[6].C, geo[6].H) == (72, 32)  # a reduction cell is listed at its input size
    assert (geo[7].C, geo[7].H) == (72, 16)
    assert (geo[13].C, geo[13].H, geo[19].C, geo[19].H) == (144, 16, 144, 8)


@pytest.mark.parametrize("k_range", [(2, 2), (1, 3)])
def test_cost_table_is_exact_for_random_children(cfg, k_range):
    # exactness does not depend on the size: a small target network keeps the counts quick
    space = _bound(cfg, k_min=k_range[0], k_max=k_range[1], target_C=8, target_layers=5)
    gen = torch.Generator().manual_seed(3)
    # the table depends only on the arch's topology and ops: a tiny supernet carries them
    arch = DartsCifarSuperNet(topology=space.topology, ops=space.search_ops(with_none=False),
                              C=2, layers=3).arch
    for metric in ("macs", "params"):
        table = cost_table(space, arch, metric=metric)
        for _ in range(4):
            child = arch.sample(epsilon=1.0, generator=gen)
            g = space.child_to_genotype(arch, child)
            assert table.of_child(child) == space.measure(g, metric=metric)


def test_darts_v2_is_a_point_of_the_space(space):
    arch = DartsCifarSuperNet(topology=space.topology, ops=space.search_ops(with_none=False),
                              C=2, layers=3).arch
    child = space.genotype_to_child(arch, genotype("DARTS_V2"))
    table = cost_table(space, arch, metric="params")
    assert table.of_child(child) == PUBLISHED_SIZE["DARTS_V2"][0]


@pytest.mark.parametrize("with_none", [False, True])
def test_supernet_forward_in_sample_and_soft_modes(cfg, with_none):
    torch.manual_seed(0)
    small = _bound(cfg, C=8, layers=5)  # reductions at cells 1 and 3
    net = small.build_supernet(ops=small.search_ops(with_none=with_none))
    assert [c.reduction for c in net.stack.cells] == [False, True, False, True, False]
    assert isinstance(net, DartsCifarSuperNet) and net.arch.block_names == {}
    x = torch.rand(2, 3, 32, 32)
    child = net.arch.sample(tau=1.0, grad=True, generator=torch.Generator().manual_seed(0))
    y = net(x, net.plan(child))
    assert y.shape == (2, 10)
    loss = get_task(DARTS_CIFAR.task).loss(y, {"label": torch.tensor([1.0, 7.0])})  # the search loop sends float labels
    loss.backward()
    assert any(p.grad is not None for p in net.arch.parameters())
    with torch.no_grad():
        assert net(x, net.plan(soft=True)).shape == (2, 10)


def test_synthetic_data_is_deterministic_balanced_and_in_range():
    a = SyntheticShapes(size=32, length=40, seed=0, split="train")
    b = SyntheticShapes(size=32, length=40, seed=0, split="train")
    arch = SyntheticShapes(size=32, length=40, seed=0, split="arch")
    s = a[13]
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["label"].dtype == torch.int64 and int(s["label"]) == 3
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert torch.equal(s["image"], b[13]["image"])
    assert not torch.equal(s["image"], arch[13]["image"])
    assert not torch.equal(s["image"], SyntheticShapes(size=32, length=40, seed=1, split="train")[13]["image"])
    assert sorted(int(a[i]["label"]) for i in range(40)) == sorted(list(range(10)) * 4)
    assert len(CLASS_NAMES) == 10


def test_synthetic_splits_from_the_task(cfg):
    task = get_task(cfg.task)
    n_train, n_arch = cfg.steps_per_epoch * cfg.data.batch_size, cfg.arch_steps_per_epoch * cfg.data.batch_size
    train, arch = task.datasets(cfg.data, seed=cfg.seed, n_train=n_train, n_arch=n_arch)
    assert isinstance(train, SyntheticShapes) and isinstance(arch, SyntheticShapes)
    assert (train.split, arch.split) == ("train", "arch")
    assert len(train) == cfg.steps_per_epoch * cfg.data.batch_size
    assert len(arch) == cfg.arch_steps_per_epoch * cfg.data.batch_size
    assert task.model_input({"image": torch.zeros(2, 3, 32, 32)}).shape == (2, 3, 32, 32)


def _write_folder(root, sizes=((40, 30), (32, 32), (50, 50), (20, 24), (32, 32))):
    rng = np.random.default_rng(0)
    for cls in ("cat", "airplane"):
        (root / cls).mkdir(parents=True)
        for k, (w, h) in enumerate(sizes):
            a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            if k == 1:
                Image.fromarray(a[:, :, 0]).save(root / cls / f"img{k}.png")  # greyscale
            elif k == 2:
                Image.fromarray(a).save(root / cls / f"img{k}.jpg")
            else:
                Image.fromarray(a).save(root / cls / f"img{k}.png")
    (root / "airplane" / "notes.txt").write_text("not an image")


def test_folder_data_is_read_and_split_in_halves(tmp_path, cfg):
    _write_folder(tmp_path / "data")
    data = dataclasses.replace(cfg.data, source=str(tmp_path / "data"), batch_size=2)
    train, arch = _datasets(data)
    assert isinstance(train, ImageFolderSplit)
    assert train.classes == ("airplane", "cat")  # sorted
    assert (len(train), len(arch)) == (6, 4)  # 5 files per class: 3 train, 2 arch
    assert not {p for p, _ in train.samples} & {p for p, _ in arch.samples}
    assert [lbl for _, lbl in train.samples] == [0, 0, 0, 1, 1, 1]
    for ds in (train, arch):
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
            assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert _bound(cfg, data=data).num_classes == 2
    small = _bound(cfg, data=data, C=2, layers=3)
    net = small.build_supernet(ops=small.search_ops(with_none=False))
    assert net.classifier.out_features == 2
    assert _bound(cfg, data=data, target_C=2, target_layers=3).build_target(
        genotype("DARTS_V2")).classifier.out_features == 2


def test_folder_data_errors(tmp_path, cfg):
    def open_(path, **kw):
        return _datasets(dataclasses.replace(cfg.data, source=str(path), **kw))

    with pytest.raises(DataError, match="no such folder"):
        open_(tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (32, 32)).save(flat / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        open_(flat)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_(empty)
    Image.new("RGB", (32, 32)).save(empty / "a" / "x.png")
    with pytest.raises(DataError, match="'b' has no images"):
        open_(empty)
    _write_folder(tmp_path / "small")
    with pytest.raises(DataError, match="fewer than one batch"):
        open_(tmp_path / "small", batch_size=16)
    (tmp_path / "small" / "cat" / "img0.png").write_bytes(b"not a png")
    train, _ = open_(tmp_path / "small", batch_size=2)
    with pytest.raises(DataError, match="img0.png"):
        train[[str(p) for p, _ in train.samples].index(str(tmp_path / "small" / "cat" / "img0.png"))]


def test_errors_are_one_line(tmp_path, cfg):
    with pytest.raises(DataError) as exc:
        _datasets(dataclasses.replace(cfg.data, source=str(tmp_path / "nope")))
    assert "\n" not in str(exc.value)


def _search(args, tmp):
    from atldas.cli import main

    return main(["search", "--space", "darts_cifar", "--threads", "1", "--no-progress", "--out", str(tmp), *args])


def test_two_epoch_search_through_the_cli(tmp_path):
    out = tmp_path / "run"
    rc = _search(["--epochs", "2", "--set", "steps_per_epoch=2", "--set", "arch_steps_per_epoch=2",
                  "--set", "batch_size=8", "--set", "C=4", "--set", "layers=3"], out)  # a small supernet
    assert rc == 0
    data = json.loads((out / "genotype.json").read_text())
    assert data["space"]["name"] == "darts_cifar"
    assert data["space"]["macro"]["C"] == 36 and data["space"]["macro"]["layers"] == 20
    g = Genotype.load(out / "genotype.json")
    assert bind_space(make_search_config(space="darts_cifar")).measure(g, metric="macs") == data["cost"]["macs"]
    assert len((out / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_search_on_a_folder_and_with_the_darts_baseline(tmp_path):
    _write_folder(tmp_path / "data", sizes=((32, 32),) * 8)
    assert _search(["--epochs", "2", "--data", str(tmp_path / "data"), "--set", "batch_size=2",
                    "--set", "steps_per_epoch=2", "--set", "arch_steps_per_epoch=2"], tmp_path / "a") == 0
    assert (tmp_path / "a" / "genotype.json").is_file()
    assert _search(["--epochs", "2", "--strategy", "darts", "--set", "batch_size=2", "--set", "steps_per_epoch=2",
                    "--set", "arch_steps_per_epoch=2", "--set", "C=4", "--set", "layers=3"],
                   tmp_path / "b") == 0
    assert (tmp_path / "b" / "genotype.json").is_file()
