"""ImageDataModule: setup, values, epochs, ranks, Lightning itself, and the data configs."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from data_fixtures import forbid_network, local_idx_source, make_mnist_idx_files, small_mnist_spec
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from intvae.app.config import CONF_DIR
from intvae.data import DATASET_NAMES, ImageDataModule, registry

CONF = CONF_DIR
SIZES = {"train": 300, "val": 60, "test": 50}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path / "data-dir")


def fake_trainer(rank: int = 0, world_size: int = 1, epoch: int = 0) -> SimpleNamespace:
    """What the datamodule reads from a trainer: rank, world size, epoch, device."""
    return SimpleNamespace(
        global_rank=rank,
        world_size=world_size,
        current_epoch=epoch,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def synthetic(**kwargs) -> ImageDataModule:
    dm = ImageDataModule(
        "synthetic", batch_size=kwargs.pop("batch_size", 50), sizes=SIZES, **kwargs
    )
    dm.setup()
    return dm


def test_attributes_are_known_before_setup():
    dm = ImageDataModule("frey", eps=1e-5)
    assert (dm.image_shape, dm.num_pixels, dm.levels, dm.eps, dm.binarized) == (
        (1, 28, 20),
        560,
        256,
        1e-5,
        False,
    )
    dm = ImageDataModule("binarized_mnist")
    assert (dm.image_shape, dm.levels, dm.eps, dm.binarized) == ((1, 28, 28), 2, 0.0, True)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        ImageDataModule("cifar10")
    with pytest.raises(ValueError, match=r"eps=0.5 is invalid: eps must be a number in \[0, 0.5\)"):
        ImageDataModule("mnist", eps=0.5)
    with pytest.raises(ValueError, match="generated datasets only"):
        ImageDataModule("mnist", sizes={"train": 1})
    with pytest.raises(RuntimeError, match="call setup"):
        ImageDataModule("synthetic").train_dataloader()


def test_batches_shapes_values_and_epochs():
    dm = synthetic(eps=1e-3)
    train = dm.train_dataloader()
    assert len(train) == 6
    epoch0 = list(train)
    assert [tuple(b.shape) for b in epoch0] == [(50, 784)] * 6
    assert all(b.dtype == torch.float32 for b in epoch0)
    values = torch.cat(epoch0)
    assert values.min().item() == pytest.approx(1e-3) and values.max().item() == pytest.approx(
        1 - 1e-3
    )
    assert torch.equal(torch.cat(list(train)), values)  # same epoch, same order
    train.set_epoch(1)
    epoch1 = torch.cat(list(train))
    assert not torch.equal(epoch1, values)
    torch.testing.assert_close(epoch1.sum(0), values.sum(0))  # the same images, reordered


def test_splits_are_disjoint():
    dm = synthetic()
    splits = {
        "train": torch.cat(list(dm.train_dataloader())),
        "val": torch.cat(list(dm.val_dataloader())),
        "test": torch.cat(list(dm.test_dataloader())),
    }
    assert {k: len(v) for k, v in splits.items()} == SIZES
    rows = {split: {tuple(r.tolist()) for r in data} for split, data in splits.items()}
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_epoch_comes_from_the_trainer():
    dm = synthetic(seed=4)
    standalone = dm.train_dataloader()
    standalone.set_epoch(3)
    epoch3 = torch.cat(list(standalone))
    dm.trainer = fake_trainer(epoch=3)
    with_trainer = dm.train_dataloader()
    assert torch.equal(torch.cat(list(with_trainer)), epoch3)
    dm.trainer.current_epoch = 4
    assert not torch.equal(torch.cat(list(with_trainer)), epoch3)


def test_two_simulated_ranks_get_equal_disjoint_shards():
    dm = ImageDataModule("synthetic", batch_size=40, sizes=SIZES)
    shards = {}
    for rank in range(2):
        dm.trainer = fake_trainer(rank=rank, world_size=2, epoch=1)
        dm.setup("fit")
        shards[rank] = (list(dm.train_dataloader()), list(dm.val_dataloader()))
    assert len(shards[0][0]) == len(shards[1][0]) == 3  # 300 // 2 // 40
    assert len(shards[0][1]) == len(shards[1][1])
    train_rows = [{tuple(r.tolist()) for b in shards[rank][0] for r in b} for rank in range(2)]
    assert len(train_rows[0]) == len(train_rows[1]) == 120
    assert not train_rows[0] & train_rows[1]
    val = torch.cat(shards[0][1] + shards[1][1])
    assert torch.equal(val, dm._splits["val"])  # every validation image once, in order


def test_setup_by_stage_and_teardown():
    dm = ImageDataModule("synthetic", sizes=SIZES)
    dm.setup("test")
    assert set(dm._splits) == {"test"}
    dm.setup("fit")
    assert set(dm._splits) == {"train", "val", "test"}
    dm.teardown("fit")
    assert set(dm._splits) == {"test"}


def test_binarized_mnist(monkeypatch, tmp_path):
    make_mnist_idx_files(tmp_path / "raw")
    monkeypatch.setitem(
        registry.DATASETS, "mnist", small_mnist_spec(local_idx_source(tmp_path / "raw"))
    )
    root = tmp_path / "root"
    dm = ImageDataModule("binarized_mnist", root=root, batch_size=10, seed=1)
    dm.prepare_data()
    dm.setup()
    train = dm.train_dataloader()
    epoch0 = torch.cat(list(train))
    assert set(epoch0.unique().tolist()) == {0.0, 1.0}
    train.set_epoch(1)
    epoch1 = torch.cat(list(train))
    assert not torch.equal(epoch1.sum(0), epoch0.sum(0))  # a fresh draw, not just a reshuffle
    again = ImageDataModule("binarized_mnist", root=root, batch_size=10, seed=1)
    again.setup()
    repeat = again.train_dataloader()
    repeat.set_epoch(1)
    assert torch.equal(torch.cat(list(repeat)), epoch1)  # same seed and epoch, same draw
    val = torch.cat(list(dm.val_dataloader()))
    assert set(val.unique().tolist()) == {0.0, 1.0}
    other_seed = ImageDataModule("binarized_mnist", root=root, batch_size=10, seed=2)
    other_seed.setup("validate")
    assert torch.equal(torch.cat(list(other_seed.val_dataloader())), val)  # fixed eval draw
    continuous = ImageDataModule("mnist", root=root, eps=0.0)
    continuous.setup("test")
    grey = torch.cat(list(continuous.test_dataloader()))
    assert grey.unique().numel() > 2


class Recorder(L.LightningModule):
    """Records the first training batch of every epoch, and whether validation batches are views."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(784, 1)
        self.first_batches: dict[int, torch.Tensor] = {}
        self.val_batches_are_views: list[bool] = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.first_batches[self.current_epoch] = batch.clone()
        return self.layer(batch).mean()

    def validation_step(self, batch, batch_idx):
        served = self.trainer.val_dataloaders.data  # the datamodule's device tensor
        self.val_batches_are_views.append(
            batch.untyped_storage().data_ptr() == served.untyped_storage().data_ptr()
        )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(max_epochs: int, tmp_path: Path) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )


def test_lightning_fit_and_resume_reproduce_the_shuffle(tmp_path):
    dm = ImageDataModule("synthetic", batch_size=50, sizes=SIZES, seed=7)
    straight = Recorder()
    trainer(2, tmp_path).fit(straight, dm)
    assert set(straight.first_batches) == {0, 1}
    assert not torch.equal(straight.first_batches[0], straight.first_batches[1])
    assert straight.val_batches_are_views == [True] * 4  # Lightning copied nothing

    dm = ImageDataModule("synthetic", batch_size=50, sizes=SIZES, seed=7)
    first = trainer(1, tmp_path)
    first.fit(Recorder(), dm)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = Recorder()
    trainer(2, tmp_path).fit(resumed, dm, ckpt_path=tmp_path / "epoch1.ckpt")
    assert set(resumed.first_batches) == {1}
    assert torch.equal(resumed.first_batches[1], straight.first_batches[1])


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_data_configs_compose_and_instantiate(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        grouped = compose(overrides=[f"+data={name}", "+eps=1e-5", "+seed=3"])
    assert grouped.data.eps == 1e-5 and grouped.data.seed == 3
    assert grouped.data.eval_batch_size == grouped.data.batch_size == 100
    dm = instantiate(grouped.data)
    assert isinstance(dm, ImageDataModule) and dm.name == name and dm.seed == 3
    assert dm.eps == (0.0 if name == "binarized_mnist" else 1e-5)


def test_a_data_config_alone_uses_the_defaults():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=["+data=synthetic"])
    assert cfg.data.eps == 0.001 and cfg.data.seed == 0
    dm = instantiate(cfg.data)
    dm.setup()
    assert len(dm.train_dataloader()) == 5 and len(dm.val_dataloader()) == 2
