"""Render chat messages into a prompt with the model's Jinja chat template, exactly as transformers'
`apply_chat_template` does (its own renderer: sandboxed Jinja, `raise_exception`, `tojson`)."""


class ChatTemplateError(ValueError):
    """The messages cannot be rendered (the template raised, or the model has no template)."""


def render_chat(template, messages, special_tokens=None, add_generation_prompt=True):
    """The prompt text for `messages` ([{'role', 'content'}, ...]) ending with the assistant's header.

    special_tokens: {'bos_token': ..., 'eos_token': ...} strings the template may use. Raises ChatTemplateError.
    """
    if not template:
        raise ChatTemplateError("this model has no chat template; use /v1/completions, or start the server with "
                                "--chat-template FILE")
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(conversations=[list(messages)], chat_template=template,
                                            add_generation_prompt=add_generation_prompt, **(special_tokens or {}))
    except (TemplateError, TypeError, ValueError) as e:
        raise ChatTemplateError(f"the chat template refused these messages: {e}") from None
    return rendered[0]
