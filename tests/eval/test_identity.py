"""codegen.check_identity: which samples are a run's (the saved identity, and the served model name recorded beside
it), and how a mismatch reads."""
import json

import pytest

from megasnow.eval.codegen import RunMismatch, check_identity, identity_path, served_model

IDENTITY = {"benchmark": "c66702654004a0f1e2d3c4b5a6978877", "model": "", "backend": "openai", "max_tokens": 16}


def _write(tmp_path, meta):
    out = tmp_path / "samples.jsonl"
    out.write_text('{"task_id": "1", "completion": ""}\n')
    with open(identity_path(str(out)), "w") as f:
        json.dump(meta, f)
    return str(out)


def test_served_model_is_recorded_beside_the_identity_not_in_it(tmp_path):
    out = _write(tmp_path, {**IDENTITY, "served_model": "smollm2"})
    assert served_model(out) == "smollm2"
    assert check_identity(out, dict(IDENTITY), "ADVICE") is True  # reuse: no server asked, the name read back
    assert check_identity(out, dict(IDENTITY), "ADVICE", served="smollm2") is True
    with pytest.raises(RunMismatch) as e:  # resumed against another model behind the same URL
        check_identity(out, dict(IDENTITY), "ADVICE", served="other")
    assert str(e.value) == (f"{out}: holds samples of another run: served_model ('smollm2' there, 'other' now: the "
                            f"endpoint serves another model); ADVICE")


def test_a_meta_file_without_the_served_name_still_matches(tmp_path):
    out = _write(tmp_path, dict(IDENTITY))  # written before served_model was recorded
    assert served_model(out) == ""
    assert check_identity(out, dict(IDENTITY), "ADVICE", served="smollm2") is True


def test_mismatch_message_cuts_fingerprints_inside_their_quotes(tmp_path):
    out = _write(tmp_path, {**IDENTITY, "served_model": "smollm2"})
    now = dict(IDENTITY, benchmark="4c0ae5768a65f9e8d7c6b5a4", max_tokens=9)
    with pytest.raises(RunMismatch) as e:
        check_identity(out, now, "ADVICE")
    assert str(e.value) == (f"{out}: holds samples of another run: benchmark ('c66702654004...' there, "
                            f"'4c0ae5768a65...' now), max_tokens (16 there, 9 now); ADVICE")
    short = dict(IDENTITY, benchmark="abc")
    with pytest.raises(RunMismatch) as e:
        check_identity(out, short, "ADVICE")
    assert "benchmark ('c66702654004...' there, 'abc' now)" in str(e.value)
