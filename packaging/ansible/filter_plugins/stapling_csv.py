"""stapling_csv: rows (lists of cells) to CSV text for the fleet report (audit.yml).

Responder names, causes and statuses come from each host's audit JSON, and a responder name
is whatever a tenant's certificate or a forged error_log line says. Written by hand, a comma
or a quote in one shifts the columns, and a cell starting with = + - @ (or a tab or carriage
return) is a formula to Excel and LibreOffice ("CSV injection"). So: Python's csv writer
quotes what needs quoting, and a formula cell gets a leading single quote, as OWASP advises
(https://owasp.org/www-community/attacks/CSV_Injection). Control characters (terminal
escapes) are written as \\xNN, as stapling-agent's own text output does, and a cell longer
than 256 bytes is cut and says its length (a host name is at most 253 bytes, so only a
tenant's text is ever cut; the JSON report keeps it whole).

Python 3 standard library only: the filter runs on the control node.
"""

import csv
import io
import re

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# C0 controls (tab, CR and LF too: a cell stays on one line), DEL and C1 controls.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_CELL = 256  # bytes


def _clip(text):
    data = text.encode("utf-8")
    if len(data) <= MAX_CELL:
        return text
    mark = "\u2026(%d bytes)" % len(data)
    cut = data[: MAX_CELL - len(mark.encode("utf-8"))]
    # Back off to a character boundary rather than split one.
    return cut.decode("utf-8", "ignore") + mark


def cell(value):
    """One cell, safe for a spreadsheet and a terminal."""
    if value is None:
        return ""
    # Lone surrogates (never in stapling-agent's JSON, which writes U+FFFD) cannot be written.
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    # Judge the formula on the raw text: a tab or CR first is a trigger even though it is
    # escaped below.
    formula = text.startswith(FORMULA_START)
    text = CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), _clip(text))
    if formula:
        text = "'" + text
    return text


def stapling_csv(rows):
    """CSV text, one line per row ending in "\\n", cells quoted only where needed."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return out.getvalue()


class FilterModule:
    def filters(self):
        return {"stapling_csv": stapling_csv}
