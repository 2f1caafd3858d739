"""How flux_all_presets.csv was made (no InfluxDB 2 server can run here):
the annotated CSV that InfluxDB 2 answers to the collector's Flux query for
the given presets over sample.lp, following Flux's documented semantics
(range, filter on measurement and fields, last() per series and field), in
InfluxDB 2's annotated-CSV layout. The tests use the committed CSV, not this.

    presets=queue_by_destination,destination_queue_run_time,htcondor_cluster_usage
    presets=$presets,htcondor_slot_shapes,slurm_nodes,queue_overview
    .venv/bin/python tests/data/sources/make_flux_csv.py tests/data/sources/sample.lp "$presets" \
        > tests/data/sources/flux_all_presets.csv
"""
import re
import sys
from datetime import UTC, datetime

from tpv_broker.collector.flux import _fields
from tpv_broker.collector.presets import presets_for
from tpv_broker.config.collector_settings import CollectorSettings

ANCHOR = 1767225600

def parse_line(line):
    # measurement+tags, fields, time (fields may contain quoted strings with spaces: not in our sample)
    head, fields, ts = line.rsplit(" ", 2) if line.count(" ") >= 2 else (None, None, None)
    parts = head.split(",")
    m = parts[0]
    tags = dict(p.split("=", 1) for p in parts[1:])
    fv = {}
    for kv in re.findall(r'([^,=]+)=("(?:[^"\\]|\\.)*"|[^,]+)', fields):
        k, v = kv
        if v.startswith('"'):
            fv[k] = ("string", v[1:-1].replace('\\"', '"'))
        elif v.endswith("i"):
            fv[k] = ("long", int(v[:-1]))
        elif v in ("true", "false"):
            fv[k] = ("boolean", v == "true")
        else:
            fv[k] = ("double", float(v))
    return m, tags, fv, int(ts)

def rfc(ts):
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

def rfc_ns(ts):
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "123456789Z"

def fmt(t, v):
    if t == "double":
        return repr(v) if v != int(v) else str(int(v))
    if t == "boolean":
        return "true" if v else "false"
    s = str(v)
    if any(c in s for c in ',"\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s

def csvcell(s):
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s

points = []
with open(sys.argv[1]) as lp:
    for raw in lp:
        line = raw.strip()
        if line and not line.startswith("#"):
            points.append(parse_line(line))

names = sys.argv[2].split(",")
s = CollectorSettings(presets=names)
presets = presets_for(s)
out = []
for i, p in enumerate(presets):
    spec = p.spec
    lookback = s.stats_lookback_s if spec.window == "stats" else s.lookback_s
    start, stop = ANCHOR - lookback, ANCHOR + 300
    fields = _fields(spec)
    tables = {}
    for m, tags, fv, ts in points:
        if m != spec.measurement or not (start <= ts < stop):
            continue
        for f, (t, v) in fv.items():
            if f in fields:
                key = (f, tuple(sorted(tags.items())))
                tables.setdefault(key, []).append((ts, t, v))
    # group key order: InfluxDB sorts tables by group key values
    keys = sorted(tables, key=lambda k: ([v for _, v in k[1]], k[0]))
    prev_schema = None
    for tid, key in enumerate(keys):
        f, tags = key
        rows = sorted(tables[key])
        if spec.read == "newest_per_group":
            rows = rows[-1:]
        t = rows[0][1]
        schema = (t, tuple(k for k, _ in tags))
        if schema != prev_schema:
            if out:
                out.append("")
            tagnames = [k for k, _ in tags]
            out.append("#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,"
                       + t + ",string,string" + ",string" * len(tagnames))
            out.append("#group,false,false,true,true,false,false,true,true" + ",true" * len(tagnames))
            out.append(f"#default,p{i},,,,,,,," + "," * (len(tagnames) - 1) if tagnames else f"#default,p{i},,,,,,,")
            out.append(",result,table,_start,_stop,_time,_value,_field,_measurement"
                       + "".join("," + k for k in tagnames))
            prev_schema = schema
        for ts, t, v in rows:
            out.append(f",,{tid},{rfc_ns(start)},{rfc_ns(stop)},{rfc(ts)},{fmt(t, v)},{csvcell(f)},"
                       f"{csvcell(spec.measurement)}" + "".join("," + csvcell(val) for _, val in tags))
sys.stdout.write("\r\n".join(out) + "\r\n\r\n")
