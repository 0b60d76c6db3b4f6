"""Human-readable rates, sizes and durations for tool summaries: units adapt so a rate never rounds to 0."""


def format_rate(count, seconds, noun):
    """'1,234 docs/s', '12.5 docs/s', '29.0 docs/min' or '1.50 docs/h' (the largest unit with a rate >= 1)."""
    rate = count / max(seconds, 1e-9)
    if rate >= 100:
        return f"{rate:,.0f} {noun}/s"
    if rate >= 1 or count == 0:
        return f"{rate:.1f} {noun}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:.1f} {noun}/min"
    return f"{rate * 3600:.2f} {noun}/h"


def format_bytes(nbytes):
    """Decimal units: '512 B', '1.50 kB', '12.3 MB', '2.09 GB'."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def format_bytes_rate(nbytes, seconds):
    """'12.3 MB/s', '850 kB/s', '40 B/s'."""
    return format_bytes(nbytes / max(seconds, 1e-9)) + "/s"


def format_duration(seconds):
    """'0.4 s', '12.3 s', '4 min 05 s', '2 h 03 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
