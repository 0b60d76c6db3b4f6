"""Session fixtures for the quality tests: one small real annotator (MiniLM, frozen, trained once on
machine files) and one tiny random-weight annotator for fast scoring-mechanics tests."""

import pytest
import torch

from tests.quality.machine_corpus import machine_negatives, stdlib_functions, write_jsonl

TEST_MAX_LENGTH = 64  # the window rule is tested separately; small windows keep CPU time low


@pytest.fixture(scope="session")
def training_corpus(tmp_path_factory):
    """Positives (documented stdlib functions) and phase-1-style negatives as JSONL.

    No benchmark solution is a positive (the training-data builder drops them): alignment checks score all of
    HumanEval, which the annotator never saw.
    """
    root = tmp_path_factory.mktemp("quality_corpus")
    positives = [{"text": t} for t in stdlib_functions(100, seed=1)]
    negatives = [{"text": t, "lang": "misc", "id": f"neg{i}", "repo": "machine"} for i, t in
                 enumerate(machine_negatives(200, seed=2))]
    return {
        "positives": write_jsonl(str(root / "positives.jsonl"), positives),
        "documents": write_jsonl(str(root / "documents" / "part0.jsonl"), negatives),
        "root": str(root),
    }


@pytest.fixture(scope="session")
def trained_annotator(training_corpus, tmp_path_factory):
    """A frozen-encoder annotator trained on the machine corpus: (folder, metrics, heldout, train examples)."""
    from megasnow.quality.train import TrainConfig, train_annotator
    from megasnow.quality.training_data import PositiveSource, build_training_set

    train, heldout, _ = build_training_set([PositiveSource([training_corpus["positives"]])],
                                           [training_corpus["documents"]], heldout_fraction=0.3, seed=0)
    folder = str(tmp_path_factory.mktemp("annotators") / "minilm_frozen")
    metrics = train_annotator(train, heldout, folder, TrainConfig(max_length=TEST_MAX_LENGTH, seed=0), progress=False)
    return folder, metrics, heldout, train


@pytest.fixture(scope="session")
def tiny_annotator(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, saved as an annotator folder."""
    from transformers import BertConfig, BertModel

    from transformers import AutoTokenizer

    from megasnow.quality.annotator import AnnotatorConfig, QualityAnnotator, default_encoder_path, save_annotator

    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path(), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    annotator = QualityAnnotator(BertModel(cfg), tokenizer, AnnotatorConfig(max_length=128))
    torch.nn.init.normal_(annotator.head.weight, std=1.0)  # spread the scores so they differ per document
    folder = str(tmp_path_factory.mktemp("annotators") / "tiny")
    save_annotator(annotator, folder)
    return folder
