"""model.document_mask: the trainer's batches carry document ids cut at the EOD token, attention stays inside each
packed document (a document after an EOD scores as it would alone), and the training loss changes accordingly."""
import pytest
import torch

from megasnow.parallel import state
from megasnow.train.checkpoint import unwrap
from megasnow.train.config import load_train_config
from megasnow.train.data import MicroBatches
from megasnow.train.trainer import Trainer
from tests.train.helpers import losses, real_code_files, tiny_config, write_byte_dataset, write_config

EOD = 0  # byte 0 never occurs in source files


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    # short documents, so most 33-token samples hold an EOD somewhere in the middle
    return write_byte_dataset(str(tmp_path_factory.mktemp("data") / "code"), real_code_files(limit=30),
                              max_bytes_per_file=20, eod_id=EOD)


def setup_trainer(tmp_path, prefix, document_mask):
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": 1}],
                      model={"document_mask": document_mask}, data={"eod_id": EOD}, checkpoint={"dir": None})
    return Trainer(load_train_config(write_config(tmp_path / "run.yaml", cfg))).setup()


def first_step_batches(trainer):
    return MicroBatches(trainer.datasets[0][0], 0, trainer.cfg.train.micro_batch_size, trainer.num_micro_batches,
                        0, 1, trainer.device, eod_id=trainer.eod_id).next_step()


def test_batches_carry_document_ids_cut_at_eod(tmp_path, prefix):
    try:
        trainer = setup_trainer(tmp_path, prefix, True)
        (mb, *_) = first_step_batches(trainer)
        trainer.metrics.close()
    finally:
        state.destroy_model_parallel()
    tokens, ids = mb["tokens"], mb["document_ids"]
    for row_tokens, row_ids in zip(tokens.tolist(), ids.tolist()):
        expected, doc = [], 0
        for t in row_tokens:
            expected.append(doc)
            doc += t == EOD  # the EOD closes its document; the next token starts a new one
        assert row_ids == expected
    assert int(ids.max()) >= 1  # the sample spans documents


def test_second_document_scores_as_if_alone(tmp_path, prefix):
    try:
        trainer = setup_trainer(tmp_path, prefix, True)
        model = unwrap(trainer.model_chunks[0]).eval()
        (mb, *_) = first_step_batches(trainer)
        row = next(r for r in range(mb["tokens"].shape[0])
                   if (mb["tokens"][r, :-4] == EOD).any())  # an EOD with a few tokens of a new document after it
        tokens, labels, ids = mb["tokens"][row:row + 1], mb["labels"][row:row + 1], mb["document_ids"][row:row + 1]
        k = int((tokens[0] == EOD).nonzero()[0])
        second = labels.clone()
        second[:, :k + 1] = -100  # score only the predictions made inside the document after the EOD
        with torch.no_grad():
            masked = float(model(tokens, labels=second, document_ids=ids))
            unmasked = float(model(tokens, labels=second))
            alone = float(model(tokens[:, k + 1:], labels=labels[:, k + 1:]))
        trainer.metrics.close()
    finally:
        state.destroy_model_parallel()
    assert masked == pytest.approx(alone, abs=1e-5)
    assert abs(unmasked - alone) > 1e-3  # without the mask it sees the previous document


def run_one_step(tmp_path, prefix, document_mask):
    """(first-step loss the trainer logged, the loss of its batches recomputed here with the same model)."""
    try:
        trainer = setup_trainer(tmp_path, prefix, document_mask)
        model = unwrap(trainer.model_chunks[0])
        with torch.no_grad():
            batches = first_step_batches(trainer)
            expected = sum(float(model(**mb)) for mb in batches) / len(batches)
        trainer.run()
    finally:
        state.destroy_model_parallel()
    return losses(str(tmp_path / "log"))[0]["loss"], expected


def test_training_loss_uses_the_mask(tmp_path, prefix):
    on, on_expected = run_one_step(tmp_path / "on", prefix, True)
    off, off_expected = run_one_step(tmp_path / "off", prefix, False)
    assert on == pytest.approx(on_expected, abs=1e-6) and off == pytest.approx(off_expected, abs=1e-6)
    assert abs(on - off) > 1e-3
