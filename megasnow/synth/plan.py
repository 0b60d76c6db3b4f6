"""The requests of a synthesis run: one per (seed, sample index), each with a content id.

The content id is a hash of everything that decides the answer: the model, the rendered prompt (template, its
system message, the language and the seed), the sampling parameters (with the per-request sampling seed) and the
sample index. It keys the response cache, so a rerun, another driver or a changed config asks again exactly what
changed. Request k is sampled with seed `sampling.seed + k` (Magicoder's habit: reproducible, never shared).
"""
import hashlib
import json
from dataclasses import dataclass

from megasnow.generation.protocol import GenerationRequest, SamplingParams


@dataclass(frozen=True)
class PlannedRequest:
    """Request number `index` of the run: seed `seed`, sample `sample`, content id `id`, and its body."""

    index: int
    id: str
    seed: object  # seeds.Seed
    sample: int
    body: dict  # {"messages": [...]} or {"prompt": "..."}
    params: SamplingParams

    def to_generation_request(self):
        return GenerationRequest(id=self.id, params=self.params, **self.body)


def content_id(model, body, params, sample):
    """Hex SHA-256 (32 characters) of the canonical JSON of what decides a response.

    top_k and min_p join the hashed fields only when set (not 0, SamplingParams' "off"): the ids of runs made
    before they existed, or that leave them off, stay the same, so their caches still resume."""
    sampling = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "stop": list(params.stop), "seed": params.seed, "n": params.n}
    for name in ("top_k", "min_p"):
        if getattr(params, name):
            sampling[name] = getattr(params, name)
    blob = json.dumps({"model": model, "body": body, "sample": sample, "sampling": sampling},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def plan_requests(seeds, template, sampling_cfg, model):
    """[PlannedRequest] in a fixed order: seed by seed, sample 0..samples_per_seed-1 for each."""
    out = []
    for seed in seeds:
        body = template.request_body(seed.text, seed.lang)
        for sample in range(sampling_cfg.samples_per_seed):
            k = len(out)
            params = sampling_cfg.params(k)
            out.append(PlannedRequest(index=k, id=content_id(model, body, params, sample), seed=seed,
                                      sample=sample, body=body, params=params))
    return out


def shard_of(request, num_shards):
    """The driver shard of a request (by index: shards get the same language mix and sizes within one)."""
    return request.index % num_shards
