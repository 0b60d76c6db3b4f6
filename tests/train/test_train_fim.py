"""data.fim in the trainer: batches are the FIM transform of the blend's samples (with repetition, document masking
and <fim_pad> labels left out of the per-token loss), and start-up refuses what cannot work, naming the key."""
import os

import numpy as np
import pytest
import torch

from megasnow.config import ConfigError
from megasnow.data.fim import FIMDataset, FIMTransform
from megasnow.data.indexed import write_dataset
from megasnow.data.tokenizer import load_tokenizer
from megasnow.generation.local import LocalEngine
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.parallel import state
from megasnow.train.config import load_train_config
from megasnow.train.trainer import Trainer
from tests.data.code_fixtures import sentencepiece_model
from tests.data.test_fim import repo_docs
from tests.train.helpers import losses, tiny_config, train_in_process, write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(tokenizer file, two dataset prefixes) of repository documents of real code, EOD appended."""
    model = sentencepiece_model()
    tok = load_tokenizer(model)
    docs = repo_docs()
    out = tmp_path_factory.mktemp("fim")
    prefixes = [write_dataset(str(out / f"part{k}"), [tok.encode(t) + [tok.eod_id] for t in docs[k::2]],
                              dtype=np.int32) for k in range(2)]
    return model, prefixes


def config(tmp_path, tokenizer, prefixes, fim, steps=3, model=None, data_workers=None, **sections):
    blend = [{"path": prefixes[0], "repeat": 2}, {"path": prefixes[1], "repeat": 1}]
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": blend, "steps": steps}],
                      model={"vocab_size": None, "max_seq_len": 128, **(model or {})},
                      data={"tokenizer": tokenizer, "seq_len": 64, "fim": fim, "num_workers": data_workers},
                      **sections)
    return write_config(tmp_path / "run.yaml", cfg)


def test_batches_are_the_fim_transform_of_the_blend(tmp_path, data, capsys):
    tokenizer, prefixes = data
    fim = {"rate": 0.5, "spm_rate": 1.0, "level": "file", "mask_pad": True}
    cfg = load_train_config(config(tmp_path, tokenizer, prefixes, fim, model={"document_mask": True},
                                   train={"calculate_per_token_loss": True}))
    try:
        trainer = Trainer(cfg).setup()
        train, _ = trainer.datasets[0]
        assert isinstance(train, FIMDataset)
        tok = load_tokenizer(tokenizer)
        t = tok.fim_tokens()
        # start-up says FIM is on, with its settings and token ids
        ids = ", ".join(f"{n}={i}" for n, i in zip(t.names, (t.prefix, t.middle, t.suffix, t.pad)))
        assert (f"data: fill-in-the-middle ON (data.fim): rate 0.5 of file-level units rearranged, spm_rate 1.0 of "
                f"those in SPM order (the rest PSM), level file; tokens {ids}; <fim_pad> labels left out of the "
                f"loss; units end at ids [{tok.eod_id}, {tok.file_sep_id}]") in capsys.readouterr().out
        ref = FIMTransform(tok, 0.5, 1.0, "file", seed=cfg.data.seed)
        raw = train.dataset
        for i in range(0, len(train), 7):
            assert np.array_equal(train[i], ref(raw[i], i))
        fim_pad = tok.fim_tokens().pad
        batches = trainer._micro_batches(train, 0)
        assert torch.equal(batches.ignore_label_ids, torch.tensor([fim_pad]))
        (mb, *_) = batches.next_step()
        assert "document_ids" in mb
        rows = np.stack([train[i] for i in range(len(train))])
        assert (rows == tok.fim_tokens().prefix).sum() > 0
        trainer.run()
    finally:
        state.destroy_model_parallel()
    recs = losses(str(tmp_path / "log"))
    assert [r["step"] for r in recs] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in recs)
    # generation lays out infilling prompts the way this checkpoint was trained: SPM only
    engine = LocalEngine.from_path(str(tmp_path / "ckpt"))
    assert engine.fim_format == "spm"
    fim = tok.fim_tokens()
    prepared = engine.prepare(GenerationRequest(id="f", prompt="def f(x):\n", suffix="\n    return y\n",
                                                params=SamplingParams(max_tokens=8)))
    assert list(prepared.prompt_ids[:2]) == [fim.prefix, fim.suffix]


def test_fim_needs_a_tokenizer_and_per_token_loss_for_mask_pad(tmp_path, data):
    tokenizer, prefixes = data
    with pytest.raises(ConfigError, match=r"data\.fim\.rate > 0 needs data\.tokenizer"):
        load_train_config(config(tmp_path, None, prefixes, {"rate": 0.5}))
    with pytest.raises(ConfigError, match=r"data\.fim\.mask_pad .* set train\.calculate_per_token_loss=true"):
        load_train_config(config(tmp_path, tokenizer, prefixes, {"rate": 0.5, "mask_pad": True}))
    with pytest.raises(ConfigError, match=r"data\.fim\.spm_rate must be a probability in \[0, 1\], got 1\.5"):
        load_train_config(config(tmp_path, tokenizer, prefixes, {"rate": 0.5, "spm_rate": 1.5}))


def test_tokenizer_without_fim_tokens_refused_at_start_up(tmp_path, data, smollm2):
    """SmolLM2's tokenizer (StarCoder-like special tokens, but no <fim_*>) cannot train with FIM: one line naming
    data.fim.rate and data.tokenizer, before any data is read."""
    _, prefixes = data
    assert load_tokenizer(os.path.join(smollm2.step_dir, "tokenizer.json")).fim_tokens() is None
    cfg = config(tmp_path, smollm2.step_dir, prefixes, {"rate": 0.5}, model={"vocab_size": 49152})
    with pytest.raises(ConfigError, match=r"^data\.fim\.rate=0\.5 \(data\.fim\.level=file\) with data\.tokenizer: "
                                          r".*has no fill-in-the-middle tokens.*or set data\.fim\.rate=0$"):
        train_in_process(cfg)
    assert not os.path.exists(tmp_path / "log" / "metrics.jsonl")


def test_data_workers_give_the_same_batches_and_losses(tmp_path, data):
    """data.num_workers (DataLoader worker processes reading and FIM-rearranging ahead of the step): the same
    micro-batches as reading in the training process, from the start and from a resume point, and the same losses
    bit for bit."""
    tokenizer, prefixes = data
    fim = {"rate": 0.5, "spm_rate": 0.5, "level": "file"}
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        cfg = load_train_config(config(out, tokenizer, prefixes, fim, data_workers=workers))
        try:
            trainer = Trainer(cfg).setup()
            assert trainer.data_workers == workers
            train, _ = trainer.datasets[0]
            for consumed in (0, 6):  # a resume point inside the data
                batches = trainer._micro_batches(train, consumed)
                steps = [batches.next_step() for _ in range(3)]
                batches.close()
                runs.setdefault(consumed, []).append([mb["tokens"] for step in steps for mb in step])
            trainer.run()
        finally:
            state.destroy_model_parallel()
        runs.setdefault("losses", []).append([r["loss"] for r in losses(str(out / "log"))])
    for consumed in (0, 6):
        plain, workers = runs[consumed]
        assert len(plain) == len(workers) and all(torch.equal(a, b) for a, b in zip(plain, workers))
    assert runs["losses"][0] == runs["losses"][1] and len(runs["losses"][0]) == 3


def test_data_num_workers_must_be_a_count(tmp_path, data):
    tokenizer, prefixes = data
    with pytest.raises(ConfigError, match=r"^data\.num_workers must be an integer >= 0 .*got -1$"):
        load_train_config(config(tmp_path, tokenizer, prefixes, {"rate": 0.0}, data_workers=-1))
