"""How a command's errors read on the command line: the library's messages with its config
fields as the flags a user types (:func:`in_flags`), and one line for an error no check names."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from typer.models import OptionInfo
from typer.utils import get_params_from_function

__all__ = ["field_flags", "in_flags", "unexpected"]


def unexpected(exc: Exception) -> str:
    """One line for an exception no check of atlasprep's names: most often a damaged or
    unusual input that a library below refused."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    kind = type(exc).__name__
    return (
        f"{kind}{': ' + text if text else ''} (unexpected: an input may be damaged or of a kind "
        "atlasprep does not check; -vv shows the traceback, and if the inputs are sound, please report it)"
    )


def field_flags(func: Callable[..., Any], fields: Mapping[str, str]) -> dict[str, str]:
    """Field -> flag for a command: each option parameter's name -> the long flag a user types
    (``--no-shuffle`` for an option that is on by default), plus ``fields``' own names."""
    flags: dict[str, str] = {}
    for name, param in get_params_from_function(func).items():
        info = param.default
        if not isinstance(info, OptionInfo):
            continue  # an argument has no flag to name
        decls = [d for d in info.param_decls or () if d.startswith("--")]
        flag = decls[0] if decls else "--" + name.replace("_", "-")
        on_off = flag.split("/")
        flags[name] = on_off[1].strip() if len(on_off) > 1 and info.default is True else on_off[0].strip()
    for field, target in fields.items():
        default = "--" + target.replace("_", "-")
        flags[field] = target if target.startswith("-") else flags.get(target, default)
    return flags


# A field named in a message: a whole word, not part of a path, a quoted value or a [table] key.
_WORD = r"(?<![\w/.\-'\"\[`=:])({})(?![\w/\-'\"\]`=]|\.\w)"  # (`:` before: a file's modality, a.h5mu:atac)


def in_flags(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with the config fields it names as flags, where a library message names
    them: the fields that lead it (``bin_size_mm = 0: …`` -> ``--bin-size 0: …``, ``where: …``,
    ``registration, reference_organ and crosswalk go together: …``) and every field of a
    ``set …`` or ``check …`` hint, up to the clause's end (``set overwrite to replace it`` ->
    ``pass --overwrite to replace it``). Elsewhere a word is left alone: a message also names
    obs columns (``donor_id``) that share a name with a filter's field."""
    if not flags:
        return message
    alts = "|".join(map(re.escape, sorted(flags, key=len, reverse=True)))
    any_field = re.compile(_WORD.format(alts))

    def named(text: str) -> str:
        return re.sub(r"(--[\w-]+) = ", r"\1 ", any_field.sub(lambda m: flags[m.group(1)], text))

    lead = re.match(rf"(?:{alts})(?:(?:, | and | or )(?:{alts}))*(?= = |:| |$)", message)
    if lead:
        rest = message[lead.end() :]
        message = named(message[: lead.end()]) + (" " + rest[3:] if rest.startswith(" = ") else rest)

    def hint(match: re.Match[str]) -> str:
        verb, said = match.group(1), named(match.group(2))
        if said == match.group(2):
            return match.group(0)
        return ("pass " if verb == "set" else "check ") + said

    # the verb as a word, not a flag's tail (``--set``), up to the clause's end or the next verb
    return re.sub(r"(?<![\w-])(set|check) ((?:(?!(?<![\w-])(?:set|check) )[^;])*)", hint, message)
