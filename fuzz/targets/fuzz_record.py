"""atheris target: classic libestats record files (web10g/record.py).

Input: [mode][file]. mode bits:
  0    fix the trailer: the file's last two bytes are replaced by the checksum of what
       comes before (so mutations reach the structure and the decoding, not only the sum)
  1    read_salvage() rather than RecordReader
  2-3  layout given: None (from the metadata), "head", "middle", "old"
Whole files are decoded (rows, masked, records_raw) and every row formatted as text.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

LAYOUTS = (None, "head", "middle", "old")


def setup():
    from web10g import record

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0], data[1:]
        if mode & 1 and len(body) >= 2:
            body = _fix(record, body)
        layout = LAYOUTS[mode >> 2 & 3]
        if mode & 2:
            record.read_salvage(body, layout=layout)
            return
        r = record.RecordReader(body, layout=layout)
        rows = r.rows()
        r.masked()
        r.records_raw()
        for row in rows[:4]:
            record.format_record(row, r.layout)

    return one


def _fix(record, body: bytes) -> bytes:
    s = record._Sum()
    s.update(body[:-2])
    return body[:-2] + s.value().to_bytes(2, "big")


if __name__ == "__main__":
    _harness.main("record", setup, ("web10g.record",))
