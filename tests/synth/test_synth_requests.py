"""Templates (refused when unusable), request content ids, and the response cache (atomic chunks, resume)."""
import glob
import os

import pytest

from megasnow.config import from_dict
from megasnow.errors import UserError
from megasnow.generation.protocol import Choice, GenerationResult
from megasnow.synth.cache import ChunkWriter, load_responses, response_record
from megasnow.synth.config import PromptConfig, SamplingConfig
from megasnow.synth.plan import content_id, plan_requests, shard_of
from megasnow.synth.templates import DEFAULT_TEMPLATE, PromptTemplate, load_template
from tests.synth.helpers import make_seeds


def template_file(tmp_path, text, name="t.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_template_without_seed_placeholder_is_refused(tmp_path):
    path = template_file(tmp_path, "Write a {{language}} file.\n")
    with pytest.raises(UserError, match=r"t.txt: the template has no \{\{seed\}\} placeholder"):
        load_template(from_dict(PromptConfig, {"template": path}))


def test_unknown_placeholder_and_missing_file_are_refused(tmp_path):
    path = template_file(tmp_path, "{{seed}} in {{langauge}}\n")
    with pytest.raises(UserError, match=r"unknown placeholder \{\{langauge\}\}"):
        load_template(from_dict(PromptConfig, {"template": path}))
    with pytest.raises(UserError, match="nope.txt is not a file"):
        load_template(from_dict(PromptConfig, {"template": str(tmp_path / "nope.txt")}))
    with pytest.raises(UserError, match="needs style chat"):
        load_template(from_dict(PromptConfig, {"style": "completion", "system": "be brief"}))


def test_render_keeps_code_braces_and_the_seed_verbatim(tmp_path):
    path = template_file(tmp_path, "int main() {{ return 0; }}? no: {x} {{ seed }} ```{{fence}} {{language}}")
    t = load_template(from_dict(PromptConfig, {"template": path, "style": "completion"}))
    seed = "a = {{language}} + {b}"
    assert t.render(seed, "cpp") == "int main() {{ return 0; }}? no: {x} a = {{language}} + {b} ```cpp C++"
    assert t.request_body(seed, "shell") == {"prompt": t.render(seed, "shell")}
    assert "```bash Shell" in t.render("x", "shell")


def test_default_template_is_chat_with_optional_system(tmp_path):
    sys_file = template_file(tmp_path, "You write code.", "sys.txt")
    t = load_template(from_dict(PromptConfig, {"system": "@" + sys_file}))
    body = t.request_body("print(1)", "python")
    assert body["messages"][0] == {"role": "system", "content": "You write code."}
    assert body["messages"][1]["role"] == "user" and "```python\nprint(1)\n```" in body["messages"][1]["content"]
    assert t.text == DEFAULT_TEMPLATE and t.sha != PromptTemplate("default", DEFAULT_TEMPLATE).sha


def test_content_id_covers_model_prompt_sampling_and_sample_index():
    t = PromptTemplate("default", DEFAULT_TEMPLATE)
    sampling = from_dict(SamplingConfig, {"samples_per_seed": 2, "temperature": 0.8, "seed": 100})
    seeds = make_seeds([("python", "x = 1"), ("go", "x := 1")])
    a = plan_requests(seeds, t, sampling, "m")
    assert [(p.index, p.sample, p.params.seed) for p in a] == [(0, 0, 100), (1, 1, 101), (2, 0, 102), (3, 1, 103)]
    assert len({p.id for p in a}) == 4
    assert [p.id for p in a] == [p.id for p in plan_requests(seeds, t, sampling, "m")]  # stable
    assert a[0].id != plan_requests(seeds, t, sampling, "other")[0].id  # model
    t2 = PromptTemplate("other", DEFAULT_TEMPLATE + "Be concise.\n")
    assert a[0].id != plan_requests(seeds, t2, sampling, "m")[0].id  # template
    hot = from_dict(SamplingConfig, {"samples_per_seed": 2, "temperature": 0.9, "seed": 100})
    assert a[0].id != plan_requests(seeds, t, hot, "m")[0].id  # sampling
    p = a[0]
    assert p.id == content_id("m", p.body, p.params, 0) != content_id("m", p.body, p.params, 1)  # sample index
    req = p.to_generation_request()
    assert req.id == p.id and req.messages[0]["role"] == "user" and req.params.temperature == 0.8
    assert [shard_of(q, 3) for q in a] == [0, 1, 2, 0]


def answered_record(planned, text):
    return response_record(planned, GenerationResult(planned.id, [Choice(text, "stop", 3)], 5, 3, "m"))


def test_chunks_are_atomic_and_resume_continues_numbering(tmp_path):
    planned = plan_requests(make_seeds([("python", f"x = {i}") for i in range(5)]),
                            PromptTemplate("default", DEFAULT_TEMPLATE), SamplingConfig(), "m")
    w = ChunkWriter(str(tmp_path), "shard-00000-of-00001", flush_every=2, flush_seconds=1e9)
    for p in planned[:3]:
        w.add(answered_record(p, f"answer {p.index}"))
    chunks = sorted(glob.glob(str(tmp_path / "responses" / "*" / "chunk-*.jsonl")))
    assert [os.path.basename(c) for c in chunks] == ["chunk-000000.jsonl"]  # the third is still buffered
    assert sorted(load_responses([str(tmp_path)])) == sorted(p.id for p in planned[:2])
    w.flush()
    # a killed run's temporary file is removed by the next writer, which numbers on
    stale = tmp_path / "responses" / "shard-00000-of-00001" / ".chunk-000002.jsonl.abc.tmp"
    stale.write_text('{"id": "half')
    w2 = ChunkWriter(str(tmp_path), "shard-00000-of-00001", flush_every=10)
    assert not stale.exists() and w2.seq == 2
    w2.add(answered_record(planned[0], "a different answer"))  # the first answer of an id wins
    w2.add(answered_record(planned[3], "answer 3"))
    w2.flush()
    got = load_responses([str(tmp_path)])
    assert sorted(got) == sorted(p.id for p in planned[:4])
    assert got[planned[0].id]["choices"][0]["text"] == "answer 0"
    assert got[planned[3].id] == answered_record(planned[3], "answer 3")


def test_default_sampling_keeps_the_content_ids_of_earlier_runs():
    # hashes computed with the code before top_k/min_p existed: caches of such runs must still resume
    assert content_id("m", {"messages": [{"role": "user", "content": "hi"}]}, SamplingConfig().params(3), 1) \
        == "d961da11bd700fd417cc6c99eabaacf3"
    old = from_dict(SamplingConfig, {"temperature": 0.7, "top_p": 0.9, "stop": ["```"], "seed": 5, "top_k": -1})
    assert content_id("m", {"prompt": "x"}, old.params(0), 0) == "b35dcd781b261304497f1151f98cfad7"  # -1: all, as 0


def test_top_k_and_min_p_reach_the_request_and_its_content_id():
    t = PromptTemplate("default", DEFAULT_TEMPLATE)
    seeds = make_seeds([("python", "x = 1")])
    base = plan_requests(seeds, t, SamplingConfig(), "m")[0]
    top_k = plan_requests(seeds, t, from_dict(SamplingConfig, {"top_k": 5}), "m")[0]
    min_p = plan_requests(seeds, t, from_dict(SamplingConfig, {"min_p": 0.1}), "m")[0]
    req = top_k.to_generation_request()
    assert (req.params.top_k, req.params.min_p) == (5, 0.0)
    assert (min_p.to_generation_request().params.min_p, min_p.params.top_k) == (0.1, 0)
    assert len({base.id, top_k.id, min_p.id}) == 3


@pytest.mark.parametrize("key, value, rule", [("top_k", -2, r"sampling.top_k must be -1 or 0 \(all tokens\) or >= 1"),
                                              ("min_p", 1.5, r"sampling.min_p must be in \[0, 1\], got 1.5")])
def test_bad_top_k_and_min_p_are_refused_by_key(key, value, rule):
    with pytest.raises(UserError, match=rule):
        from_dict(SamplingConfig, {key: value})
