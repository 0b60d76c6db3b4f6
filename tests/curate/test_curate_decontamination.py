"""Decontamination: HumanEval verbatim and reformatted copies are caught with their task ids; clean code is not."""
import json

import pytest

from megasnow.curate.config import DecontaminationConfig
from megasnow.curate.decontaminate import Decontaminator, normalize
from tests.curate.corpus import humaneval_problems, reformat, stdlib_file


@pytest.fixture(scope="module")
def he():
    return humaneval_problems()


def task_ids(matches, mode=None):
    return sorted({m["task_id"] for m in matches if mode is None or m["mode"] == mode})


def test_verbatim_prompt_and_solution(he):
    d = Decontaminator(DecontaminationConfig())
    p = he["HumanEval/0"]
    content = "import math\n\n" + p["prompt"] + p["canonical_solution"] + "\n\nprint('done')\n"
    m = d.match(content)
    assert task_ids(m, "substring") == ["HumanEval/0"] and task_ids(m, "ngram") == ["HumanEval/0"]
    # the prompt with its whitespace and case changed is still a normalized substring
    assert task_ids(d.match("x = 1\n" + p["prompt"].upper().replace("\n", "\n\n  ")), "substring") \
        == ["HumanEval/0"]


def test_reformatted_solution_caught_by_ngrams_only(he):
    p = he["HumanEval/10"]
    content = "import sys\n" + reformat(p["prompt"] + p["canonical_solution"])
    assert normalize(p["canonical_solution"]) not in normalize(content)
    only_substring = Decontaminator(DecontaminationConfig(mode="substring"))
    assert task_ids(only_substring.match(content)) == []
    assert task_ids(Decontaminator(DecontaminationConfig(mode="ngram")).match(content)) == ["HumanEval/10"]


def test_every_humaneval_task_is_found_in_its_own_solution(he):
    d = Decontaminator(DecontaminationConfig())
    missed = [tid for tid, p in he.items() if tid not in task_ids(d.match(p["prompt"] + p["canonical_solution"]))]
    assert missed == []


def test_clean_real_code_has_no_matches():
    d = Decontaminator(DecontaminationConfig())
    for rel in ["json/decoder.py", "csv.py", "textwrap.py", "argparse.py", "heapq.py", "statistics.py"]:
        assert d.match(stdlib_file(rel)) == [], rel


def test_extra_benchmark_jsonl_with_custom_fields(tmp_path):
    bench = tmp_path / "mbpp.jsonl"
    rows = [{"tid": 601, "text": "Write a function to find the longest chain which can be formed from pairs.",
             "code": "def max_chain_length(arr, n):\n    max = 0\n    mcl = [1 for i in range(n)]\n"
                     "    for i in range(1, n):\n        for j in range(0, i):\n"
                     "            if (arr[i].a > arr[j].b and mcl[i] < mcl[j] + 1):\n"
                     "                mcl[i] = mcl[j] + 1\n    return max(mcl)\n"}]
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DecontaminationConfig(humaneval=False, benchmarks=[str(bench)], id_field="tid", text_fields=["text", "code"])
    d = Decontaminator(cfg)
    m = d.match("# solutions\n" + rows[0]["code"].replace("    ", "  "))
    assert {(x["benchmark"], x["task_id"], x["field"]) for x in m} == {("mbpp", "601", "code")}
    with pytest.raises(ValueError, match="no id field 'task_id'"):
        Decontaminator(DecontaminationConfig(humaneval=False, benchmarks=[str(bench)]))
