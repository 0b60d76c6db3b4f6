"""data.tokenizer must be the tokenizer the data was binarized with (its PREFIX.meta.json's vocabulary size and
end-of-document id): another one is refused at start-up in one line; a copy of the right one trains. The model's
vocabulary must hold the data's ids. A YAML's relative tokenizer and dataset paths are relative to its folder."""
import hashlib
import json
import os
import shutil
import sys

import pytest

from tests.data.code_fixtures import sentencepiece_model
from tests.train.helpers import REPO, cli, losses, real_code_files, tiny_config, write_config

sys.path.insert(0, os.path.join(REPO, "tools"))
import preprocess_data  # noqa: E402
from megasnow.data.megatron_tokenizers import TokenizerOptions  # noqa: E402


@pytest.fixture(scope="module")
def binarized(tmp_path_factory):
    """(SentencePiece model, dataset prefix binarized with it and --append-eod)."""
    out = tmp_path_factory.mktemp("tokmatch")
    src = out / "code.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for path in real_code_files(limit=12):
            f.write(json.dumps({"text": open(path, encoding="utf-8").read()[:3000]}) + "\n")
    model = sentencepiece_model()
    preprocess_data.preprocess([str(src)], str(out / "code"), model, append_eod=True, progress=False)
    return model, str(out / "code_text_document")


def word_level_tokenizer(path, vocab_size):
    """A HuggingFace tokenizer.json of `vocab_size` tokens where "</s>" is id 1 (another tokenizer than the data's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return str(path)


def config(tmp_path, prefix, steps=2, **model):
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": prefix}], "steps": steps}],
                      model={"vocab_size": None, **model}, data={"seq_len": 32})
    return write_config(tmp_path / "run.yaml", cfg)



def test_a_tokenizer_other_than_the_datas_is_refused_naming_both_values(tmp_path, binarized, capsys):
    model, prefix = binarized
    meta = json.load(open(prefix + ".meta.json"))
    assert (meta["vocab_size"], meta["eod_id"], meta["eod_token"]) == (1200, 2, "</s>")
    other = word_level_tokenizer(tmp_path / "tokenizer.json", 3000)
    code, out, err = cli(capsys, config(tmp_path, prefix), f"data.tokenizer={other}")
    assert code == 2
    assert err == (f"error: data.tokenizer: {other} is not the tokenizer phases[0].blend[0].path ({prefix}) was "
                   f"binarized with: vocab_size 3000 here, 1200 in the data; end-of-document id ('</s>') 1 here, 2 in "
                   f"the data ({prefix}.meta.json); point data.tokenizer at the tokenizer the data was binarized with "
                   f"({model}), or re-binarize the data with this one (tools/preprocess_data.py --tokenizer-model "
                   f"{other})\n")
    assert not os.path.exists(tmp_path / "ckpt")
    # the same vocabulary size but another end-of-document id: still another tokenizer
    same_size = word_level_tokenizer(tmp_path / "same_size.json", 1200)
    code, _, err = cli(capsys, config(tmp_path, prefix), f"data.tokenizer={same_size}")
    assert code == 2 and "binarized with: end-of-document id ('</s>') 1 here, 2 in the data (" in err


def test_a_copy_of_the_datas_tokenizer_trains_and_travels_with_the_checkpoint(tmp_path, binarized, capsys):
    model, prefix = binarized
    copy = tmp_path / "elsewhere" / "copied.model"
    copy.parent.mkdir()
    shutil.copyfile(model, copy)
    code, _, err = cli(capsys, config(tmp_path, prefix), f"data.tokenizer={copy}")
    assert code == 0, err
    assert [r["step"] for r in losses(str(tmp_path / "log"))] == [1, 2]
    saved = tmp_path / "ckpt" / "step_00000002" / "tokenizer.model"
    assert saved.read_bytes() == open(model, "rb").read()


def test_a_changed_tokenizer_file_with_the_same_size_and_end_of_document_is_refused(tmp_path, binarized, capsys):
    """The data's .meta.json records the tokenizer file's SHA-256: a SentencePiece model of the same vocabulary and
    end-of-document id but other contents (one piece's score changed, as a retrained model differs) is refused."""
    from sentencepiece import sentencepiece_model_pb2

    model, prefix = binarized
    meta = json.load(open(prefix + ".meta.json"))
    assert meta["tokenizer_sha256"] == hashlib.sha256(open(model, "rb").read()).hexdigest()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(open(model, "rb").read())
    proto.pieces[100].score += 1.0
    changed = tmp_path / "retrained.model"
    changed.write_bytes(proto.SerializeToString())
    code, _, err = cli(capsys, config(tmp_path, prefix), f"data.tokenizer={changed}")
    assert code == 2
    assert (f"binarized with: same vocabulary size and end of document, but another file (sha256 "
            f"{hashlib.sha256(changed.read_bytes()).hexdigest()[:12]}... here, {meta['tokenizer_sha256'][:12]}... in "
            f"the data) ({prefix}.meta.json)") in err, err
    assert not os.path.exists(tmp_path / "ckpt")


def test_a_model_vocabulary_smaller_than_the_datas_ids_is_refused(tmp_path, binarized, capsys):
    model, prefix = binarized
    code, _, err = cli(capsys, config(tmp_path, prefix, vocab_size=256))
    assert code == 2
    assert err == ("error: model.vocab_size is 256, smaller than the vocabulary the data was binarized with (1200, "
                   "recorded in its .meta.json): set data.tokenizer to that tokenizer (model.vocab_size follows it) "
                   "or set model.vocab_size >= 1200\n")
    code, _, err = cli(capsys, config(tmp_path, prefix, vocab_size=1000), f"data.tokenizer={model}")
    assert code == 2
    assert err == ("error: model.vocab_size is 1000, smaller than data.tokenizer's vocabulary (1200): remove "
                   "model.vocab_size (it defaults to the tokenizer's) or set it >= 1200\n")
    code, _, err = cli(capsys, config(tmp_path, prefix))  # no tokenizer: the preset's vocabulary (tiny: 512)
    assert code == 2 and err.startswith("error: model.vocab_size (the model preset's) is 512, smaller than the "
                                        "vocabulary the data was binarized with (1200,")


def test_relative_tokenizer_and_data_paths_of_a_yaml_elsewhere_train_from_another_cwd(tmp_path, binarized, capsys,
                                                                                      monkeypatch):
    """The YAML names `tok/code.model` and `data/code_text_document` relative to its own folder; the run starts in
    another folder. A `key=value` override stays relative to the working directory."""
    model, prefix = binarized
    project = tmp_path / "project"
    (project / "tok").mkdir(parents=True)
    (project / "data").mkdir()
    shutil.copyfile(model, project / "tok" / "code.model")
    for ext in (".bin", ".idx", ".meta.json"):
        shutil.copyfile(prefix + ext, project / "data" / ("code_text_document" + ext))
    cfg = tiny_config(tmp_path, [{"name": "only", "blend": [{"path": "data/code_text_document"}], "steps": 2}],
                      model={"vocab_size": None}, data={"seq_len": 32, "tokenizer": "tok/code.model"})
    path = write_config(project / "run.yaml", cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli(capsys, path)
    assert code == 0, err
    assert [r["step"] for r in losses(str(tmp_path / "log"))] == [1, 2]
    saved = yaml_load(tmp_path / "log" / "config.yaml")
    assert saved["data"]["tokenizer"] == str(project / "tok" / "code.model")
    assert saved["phases"][0]["blend"][0]["path"] == str(project / "data" / "code_text_document")
    code, _, err = cli(capsys, path, "data.tokenizer=tok/code.model")
    assert (code, err) == (2, "error: data.tokenizer: tok/code.model does not exist\n")


def yaml_load(path):
    import yaml

    return yaml.safe_load(open(path))


def test_legacy_sentencepiece_data_matches_its_model_and_needs_room_for_the_added_ids(tmp_path, binarized, capsys):
    """Megatron's legacy SentencePieceTokenizer ends documents with <EOD>, an id past the .model's pieces: the same
    .model matches (its pieces are the data's less the added tokens), and the model must hold the added ids."""
    model, prefix = binarized
    src = tmp_path / "code.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for path in real_code_files(limit=4):
            f.write(json.dumps({"text": open(path, encoding="utf-8").read()[:2000]}) + "\n")
    preprocess_data.preprocess([str(src)], str(tmp_path / "legacy"), model, append_eod=True, progress=False,
                               tokenizer_options=TokenizerOptions(model, "SentencePieceTokenizer",
                                                                  legacy_tokenizer=True))
    legacy = str(tmp_path / "legacy_text_document")
    meta = json.load(open(legacy + ".meta.json"))
    n = 1200 + len(meta["added_tokens"])
    assert meta["vocab_size"] == n and meta["eod_token"] == "<EOD>" and meta["eod_id"] >= 1200
    code, _, err = cli(capsys, config(tmp_path, legacy), f"data.tokenizer={model}")
    assert code == 2
    assert err == (f"error: model.vocab_size (data.tokenizer's) is 1200, smaller than the vocabulary the data was "
                   f"binarized with ({n}, recorded in its .meta.json): set model.vocab_size >= {n}\n")
    code, _, err = cli(capsys, config(tmp_path, legacy, vocab_size=n), f"data.tokenizer={model}")
    assert code == 0, err


def test_a_hf_tokenizer_folder_is_fingerprinted_by_its_tokenizer_json(tmp_path, capsys):
    """Binarized with a HF tokenizer folder: the same folder or its tokenizer.json trains; another folder with the
    same vocabulary size and end of document but another tokenizer.json is refused, naming both fingerprints."""
    folder = tmp_path / "tok"
    folder.mkdir()
    word_level_tokenizer(folder / "tokenizer.json", 400)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    src = tmp_path / "words.jsonl"
    src.write_text("".join(json.dumps({"text": " ".join(f"w{(i * 7 + j) % 398 + 2}" for j in range(60))}) + "\n"
                           for i in range(40)))
    preprocess_data.preprocess([str(src)], str(tmp_path / "words"), str(folder), append_eod=True, progress=False)
    prefix = str(tmp_path / "words_text_document")
    recorded = json.load(open(prefix + ".meta.json"))["tokenizer_sha256"]
    assert recorded == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()

    other = tmp_path / "retrained"
    shutil.copytree(folder, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["w2"], vocab["w3"] = vocab["w3"], vocab["w2"]  # same size, same "</s>": another tokenizer
    (other / "tokenizer.json").write_text(json.dumps(spec))
    code, _, err = cli(capsys, config(tmp_path, prefix), f"data.tokenizer={other}")
    assert code == 2 and "same vocabulary size and end of document, but another file (sha256 " in err, err
    assert recorded[:12] in err and not os.path.exists(tmp_path / "ckpt")
    for same in (folder, folder / "tokenizer.json"):
        code, _, err = cli(capsys, config(tmp_path, prefix, steps=1), f"data.tokenizer={same}")
        assert code == 0, err
        shutil.rmtree(tmp_path / "ckpt")
