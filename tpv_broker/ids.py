"""What a destination, tool or job id may look like, checked before any of
them reaches Redis (the API's request schemas, the CLI, the key schema).

Derived from real ids:

* destinations (TPV / Galaxy job_conf ids): ``pulsar_de``, ``pulsar_sk01_tpv``,
  ``condor_us``, ``slurm-gpu``, ``tpv.pulsar.it01``;
* tools: toolshed ids with versions (``toolshed.g2.bx.psu.edu/repos/iuc/fastp/
  fastp/0.23.4+galaxy1``, ``.../snpEff/4.3+T.galaxy1``, ``1.0~beta``), built-ins
  (``upload1``, ``Cut1``, ``__SET_METADATA__``, ``CONVERTER_bam_to_bai``) and a few
  stock tools whose ids hold single spaces (``Show beginning1``,
  ``Remove beginning1``, ``Convert characters1``, ``Extract genomic DNA 1``);
* jobs: Galaxy's integer ids, or encoded ids (hex).

Destination and tool ids are only ever Redis hash *fields* (binary-safe
arguments of HMGET), never key names or patterns; a job id is part of one
key (``<p>:inflight:job:<tenant>:<id>``), so its alphabet, and the
tenant's, is the narrowest (no colon: the two stay apart in the key). None of
them admits glob characters (``* ? [ ]``), braces (cluster hash tags),
quotes, control characters or newlines.
"""

from __future__ import annotations

import re

DEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+\-/]{0,254}$"
# A space only between two other characters, never two in a row: the stock
# tools above have them; leading/trailing/doubled spaces are typos or worse.
TOOL_ID_PATTERN = r"^[A-Za-z0-9_](?: ?[A-Za-z0-9_.:@+\-/~]){0,511}$"
TOOL_ID_MAX_CHARS = 512
JOB_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
# A Galaxy server's name on a shared broker; part of a job's key, like a job id.
TENANT_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
# A metric source's name (config ``sources``): shown in logs, /ready and labels.
SOURCE_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
# The tenant of a broker that serves one Galaxy.
DEFAULT_TENANT = "default"

# What a person reads in a 400 instead of the regex.
DEST_ID_RULE = "not a valid destination id: 1-255 of A-Z a-z 0-9 _ . : @ + - /, starting with a letter or digit"
TOOL_ID_RULE = (
    "not a valid tool id: up to 512 of A-Z a-z 0-9 _ . : @ + - / ~ and single spaces between them, "
    "starting with a letter, digit or _"
)
JOB_ID_RULE = "not a valid job id: an integer or 1-128 of A-Z a-z 0-9 _ . -"
TENANT_ID_RULE = "not a valid tenant id: 1-64 of A-Z a-z 0-9 _ . -"
SOURCE_ID_RULE = "not a valid source name: 1-64 of A-Z a-z 0-9 _ . -"

_JOB_ID = re.compile(JOB_ID_PATTERN)
_TENANT_ID = re.compile(TENANT_ID_PATTERN)
_DEST_ID = re.compile(DEST_ID_PATTERN)
_SOURCE_ID = re.compile(SOURCE_ID_PATTERN)
_TOOL_ID = re.compile(TOOL_ID_PATTERN)


def _shown(value: str) -> str:
    return repr(value[:60]) + ("..." if len(value) > 60 else "")


def check_job_id(job_id: str) -> str:
    # fullmatch: Python's `$` would also match before a trailing newline.
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"{JOB_ID_RULE} (got {_shown(job_id)})")
    return job_id


def check_tenant_id(tenant: str) -> str:
    if not _TENANT_ID.fullmatch(tenant):
        raise ValueError(f"{TENANT_ID_RULE} (got {_shown(tenant)})")
    return tenant


def check_destination_id(dest_id: str) -> str:
    if not _DEST_ID.fullmatch(dest_id):
        raise ValueError(f"{DEST_ID_RULE} (got {_shown(dest_id)})")
    return dest_id


def check_tool_id(tool_id: str) -> str:
    if len(tool_id) > TOOL_ID_MAX_CHARS or not _TOOL_ID.fullmatch(tool_id):
        raise ValueError(f"{TOOL_ID_RULE} (got {_shown(tool_id)})")
    return tool_id


def is_source_id(name: str) -> bool:
    return _SOURCE_ID.fullmatch(name) is not None
