"""Tool id fallback forms. gxadmin records the full toolshed id with its
version; a job may run a newer version that has no history yet, so ranking
falls back from the exact id to the id without version, then to the short
``owner/repo/tool`` id."""

from __future__ import annotations

# Levels in fallback order; "destination" and "default" follow them.
TOOL = "tool"
TOOL_UNVERSIONED = "tool_unversioned"
TOOL_SHORT = "tool_short"
DESTINATION = "destination"
DEFAULT = "default"
TOOL_LEVELS = (TOOL, TOOL_UNVERSIONED, TOOL_SHORT)


def tool_id_forms(tool_id: str) -> list[tuple[str, str]]:
    """``toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0`` ->
    [(tool, <that>), (tool_unversioned, …/repos/iuc/fastp/fastp), (tool_short, iuc/fastp/fastp)].
    Built-in tools (``upload1``, ``Cut1``) have only the exact form."""
    forms = [(TOOL, tool_id)]
    parts = tool_id.split("/")
    if "repos" in parts:
        i = parts.index("repos")
        if len(parts) >= i + 4:
            base = "/".join(parts[: i + 4])
            if base != tool_id:
                forms.append((TOOL_UNVERSIONED, base))
            forms.append((TOOL_SHORT, "/".join(parts[i + 1 : i + 4])))
    return forms


def stats_field(level: str, form: str) -> str:
    """The hash field under which the collector publishes one level's figures."""
    return f"{level}:{form}"
