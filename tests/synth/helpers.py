"""Helpers for synthesis unit tests: seeds, planned requests and cached-answer records built in memory."""
from megasnow.config import from_dict
from megasnow.synth.cache import response_record
from megasnow.synth.config import SynthConfig
from megasnow.synth.plan import plan_requests
from megasnow.synth.seeds import Seed
from megasnow.synth.templates import PromptTemplate, DEFAULT_TEMPLATE
from megasnow.generation.protocol import Choice, GenerationResult

TEMPLATE = PromptTemplate(name="default", text=DEFAULT_TEMPLATE)


def make_cfg(**sections):
    return from_dict(SynthConfig, sections)


def make_seeds(items):
    """Seeds from (lang, seed text) pairs."""
    return [Seed(seed_id=f"doc{i}#0", doc_id=f"doc{i}", lang=lang, text=text, source=f"seeds.jsonl:{i + 1}")
            for i, (lang, text) in enumerate(items)]


def plan_and_answer(items, cfg, model="test-model"):
    """items: (lang, seed text, answer text or None for 'never answered', finish_reason).
    Returns (planned requests, {id: cached record})."""
    seeds = make_seeds([(lang, seed) for lang, seed, _, _ in items])
    planned = plan_requests(seeds, TEMPLATE, cfg.sampling, model)
    answered = {}
    for p, (_, _, answer, finish) in zip(planned, items):
        if answer is not None:
            result = GenerationResult(request_id=p.id, choices=[Choice(answer, finish, 7)], prompt_tokens=11,
                                      completion_tokens=7, model=model)
            answered[p.id] = response_record(p, result)
    return planned, answered


def fenced(info, code):
    return f"Here is the file.\n\n```{info}\n{code}```\n"
