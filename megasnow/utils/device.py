"""One rule for a --device flag or *.device key: 'auto' picks CUDA when present; a device this machine lacks is a
UserError naming the flag or key (one `error:` line), never torch's assertion from deep inside a model load."""
from megasnow.errors import UserError


def resolve_device(spec, name="--device"):
    """torch.device for `spec` ('auto' or None: cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N', ...).

    Raises UserError naming `name` for a string torch cannot parse, for CUDA on a machine (or a torch build)
    without it, and for a CUDA index past the devices present."""
    import torch

    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UserError(f"{name} {spec!r} is not a torch device: give cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a torch built without CUDA" if torch.version.cuda is None else "no CUDA device visible"
            raise UserError(f"{name} is {spec} but this machine has no CUDA device ({build}, torch "
                            f"{torch.__version__}): use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{name} is {spec} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device
