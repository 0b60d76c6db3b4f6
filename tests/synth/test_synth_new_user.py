"""What a new user's mistakes get (from a new-user trial): an unusable --output refused before any work; a rerun into
an output whose answers were all made with another config refused (or, when told, said before asking again); path
errors naming the YAML file or flag; dropped.jsonl lines that trace an output back to its request and seed."""
import json
import os

import pytest

from megasnow.errors import UserError
from megasnow.synth.postprocess import postprocess
from megasnow.synth.seeds import plan_seeds
from megasnow.synth.syntax import syntax_error
from tests.generation.test_openai_backend import free_port
from tests.synth.conftest import LENIENT, read_jsonl, run_tool
from tests.synth.helpers import TEMPLATE, fenced, make_cfg, plan_and_answer


def one_error_line(r):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    return line


def bad_seed_file(tmp_path):
    """A seed shard with a malformed line: reading it warns, so the absence of the warning shows it was not read."""
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"text": "def f():\\n    return 1\\n", "lang": "python"}\n{"text": "unterminated\n')
    return str(path)


def test_an_unusable_output_is_refused_before_any_work(tmp_path):
    seeds = bad_seed_file(tmp_path)
    a_file = tmp_path / "tiny.yaml"
    a_file.write_text("sampling:\n  max_tokens: 8\n")
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: the output check comes before the backend's
    cases = [(str(a_file), f"error: --output {a_file} is an existing file; give a folder for the outputs (new or "
                           f"existing)"),
             (f"{a_file}/sub", f"error: --output {a_file}/sub: {a_file} is a file, not a folder; give a path whose "
                               f"folders are folders")]
    for output, expected in cases:
        r = run_tool("--config", str(a_file), "--seeds", seeds, "--base-url", url, "--output", output)
        assert one_error_line(r) == expected
    assert a_file.read_text() == "sampling:\n  max_tokens: 8\n"
    if os.path.isdir("/proc/self"):  # a folder no permission check foresees (root may "write" /proc)
        r = run_tool("--seeds", seeds, "--base-url", url, "--output", "/proc/nope")
        assert one_error_line(r) == ("error: --output /proc/nope: cannot create the folder (No such file or "
                                     "directory); give a folder you can write")


def test_path_mistakes_name_the_yaml_file_or_the_flag(tmp_path, seed_shard):
    os.makedirs(tmp_path / "cfg")
    template_yaml = tmp_path / "cfg" / "t.yaml"
    template_yaml.write_text("prompt:\n  template: missing.txt\n")
    stats_yaml = tmp_path / "cfg" / "s.yaml"
    stats_yaml.write_text("seeds:\n  language_stats: phase2/selection_report.json\n")
    out = tmp_path / "out"
    common = ["--seeds", seed_shard, "--output", str(out)]
    cases = [
        (["--config", str(template_yaml)],
         f"error: {template_yaml}: prompt.template: missing.txt is not a file (give a template file, or 'default')"),
        # an override replaces the YAML's value: named as typed
        (["--config", str(template_yaml), f"prompt.template={tmp_path / 'nope.txt'}"],
         f"error: prompt.template: {tmp_path / 'nope.txt'} is not a file (give a template file, or 'default')"),
        (["--config", str(stats_yaml)],
         f"error: {stats_yaml}: seeds.language_stats: phase2/selection_report.json is not a file (give curate's "
         f"stats.json or a selection_report.json, or null)"),
        (["backend.kind=local", f"backend.model={tmp_path / 'nomodel'}"],
         f"error: backend.model: {tmp_path / 'nomodel'}: does not exist; give a megasnow checkpoint folder or a HF "
         f"Llama folder"),
        (["backend.kind=local", "--model", str(tmp_path / "nomodel")],
         f"error: --model: {tmp_path / 'nomodel'}: does not exist; give a megasnow checkpoint folder or a HF Llama "
         f"folder"),
        (["--stage", "postprocess", "backend.model=m", "--responses", str(tmp_path / "cfg")],
         f"error: --responses {tmp_path / 'cfg'}: no responses/ folder in it: give the --output folder of another "
         f"synthesize.py driver (it holds responses/<driver>/chunk-*.jsonl, the cached answers, and run.json)"),
    ]
    for args, expected in cases:
        assert one_error_line(run_tool(*common, *args)) == expected, args
    assert not out.exists()


def test_all_seeds_skipped_names_the_field_keys_and_the_records_fields(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"content": "x = 1\n", "language": "Python", "repo": "r"}) + "\n"
                            for _ in range(3)))
    cfg = make_cfg(seeds={"documents": [str(path)]}).seeds
    with pytest.raises(UserError) as e:
        plan_seeds(cfg, progress=False)
    assert str(e.value) == (
        f"seeds.documents: no usable seed documents in {[str(path)]} (3 records read, 3 skipped); seeds.text_field "
        f"is 'text', which no record has and seeds.lang_field is 'lang', which no record has: set them to the "
        f"records' fields (content, language, repo)")
    fixed = make_cfg(seeds={"documents": [str(path)], "text_field": "content", "lang_field": "language",
                            "min_lines": 1, "max_lines": 1}).seeds
    assert [s.text for s in plan_seeds(fixed, progress=False).seeds][:1] == ["x = 1"]


def test_a_rerun_with_another_config_is_refused_unless_told(tmp_path, tiny_model, seed_shard):
    out = tmp_path / "out"
    args = ["--seeds", seed_shard, "--output", str(out), "backend.kind=local", f"backend.model={tiny_model}",
            "seeds.num_seeds=2", "execution.progress=false", *LENIENT]
    r = run_tool(*args, "sampling.max_tokens=4")
    assert r.returncode == 0, r.stderr
    config_before = (out / "config.yaml").read_text()
    r = run_tool(*args, "sampling.max_tokens=5")
    assert one_error_line(r) == (
        f"error: {out} holds 2 answers made with another config (sampling.max_tokens 4 there, 5 here), none of which "
        f"this run would use; rerun with that run's values, use a new --output folder, or pass --allow-config-change "
        f"to ask every request again into this folder (the old answers stay there, unused); nothing changed")
    assert (out / "config.yaml").read_text() == config_before
    # told: said once, before asking again; the old answers stay
    r = run_tool(*args, "sampling.max_tokens=5", "--allow-config-change")
    assert r.returncode == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert warnings == [f"warning: 2 answers in {out} were made with another config (model/template/sampling/seeds "
                        f"differ: sampling.max_tokens 4 there, 5 here), none used; asking again "
                        f"(--allow-config-change)"]
    assert "shard 0/1: 2 requests, 0 cached, 2 answered now" in r.stdout
    assert "max_tokens: 5" in (out / "config.yaml").read_text()
    # a key outside the content ids (post-processing) changed: a plain resume, nothing asked again
    r = run_tool(*args, "sampling.max_tokens=5", "postprocess.min_chars=1")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert "shard 0/1: 2 requests, 2 cached, 0 answered now" in r.stdout


def test_syntax_errors_carry_their_line_and_message():
    assert syntax_error("def f(:\n    pass\n", "python") == (False, "line 1: invalid syntax")
    assert syntax_error("x = 1\nreturn x\n", "python") == (False, "line 2: 'return' outside function")
    assert syntax_error("int f() {\n  return 1;\n}\nreturn 2;\n", "c") == (False, "line 4: return outside a "
                                                                                  "function")
    ok, detail = syntax_error("class A {\n  void f() {\n    int x = ;\n  }\n}\n", "java")
    assert ok is False and detail.startswith("line 3: ")
    assert syntax_error("x = 1\n", "python") == (True, None) and syntax_error("x", "klingon") == (None, None)


def test_dropped_lines_trace_back_to_the_request_and_the_seed(tmp_path):
    cfg = make_cfg(postprocess={"filters": {"enabled": False}, "decontamination": {"enabled": False},
                                "near_dedup": {"enabled": False}})
    good = "def area(width, height):\n    total = width * height\n    return total\n\n\nprint(area(3, 4))\n"
    planned, answered = plan_and_answer([
        ("python", "import os", fenced("python", "def f(:\n    pass\n\nprint(1)\n"), "stop"),
        ("python", "import sys", fenced("python", good), "stop"),
        ("python", "import re", fenced("python", good), "stop"),  # an exact duplicate of the one before
    ], cfg)
    postprocess(planned, answered, cfg, TEMPLATE, str(tmp_path))
    dropped = read_jsonl(tmp_path / "dropped.jsonl")
    assert dropped == [
        {"id": planned[0].id, "lang": "python", "reason": "syntax_error", "detail": "line 1: invalid syntax",
         "request_index": 0, "sample": 0, "seed_id": "doc0#0", "seed_source": "seeds.jsonl:1"},
        {"id": planned[2].id, "lang": "python", "reason": "duplicate_exact", "detail": None, "request_index": 2,
         "sample": 0, "seed_id": "doc2#0", "seed_source": "seeds.jsonl:3"}]


def test_shard_drivers_sharing_one_folder_are_not_a_config_change(tmp_path, tiny_model, seed_shard):
    """Shard 1 starting in the folder where shard 0 finished: shard 0's answers fit this config (another shard's
    requests), so nothing is refused or warned about."""
    out = tmp_path / "out"
    args = ["backend.kind=local", f"backend.model={tiny_model}", "seeds.num_seeds=4", "sampling.max_tokens=4",
            "execution.progress=false", *LENIENT]
    for shard in ("0/2", "1/2"):
        r = run_tool("--seeds", seed_shard, "--output", str(out), "--stage", "generate", "--shard", shard, *args)
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        assert f"shard {shard}: 2 requests, 0 cached, 2 answered now" in r.stdout
