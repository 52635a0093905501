#!/usr/bin/env python3
"""A third-party Modbus server (pymodbus) for enviromon's tests.

Usage:
  pymodbus_server.py --dump SPEC.json          print the register image as JSON and exit
  pymodbus_server.py --serve PORT SPEC.json    serve it over Modbus TCP on 127.0.0.1:PORT

SPEC is a JSON list of {"type": "f32", "order": "CDAB", "value": 1.5, "address": 0}. The register
image is computed here with Python's struct module, independently of enviromon's own encoder, so the
test checks enviromon's decoder against an outside implementation of each type and word order.
"""
import json
import struct
import sys

FORMATS = {
    "u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q",
    "f32": ">f", "f64": ">d", "bool": ">H",
}


def words(kind, order, value):
    fmt = FORMATS[kind]
    v = (1 if value else 0) if kind == "bool" else (float(value) if kind.startswith("f") else int(value))
    raw = struct.pack(fmt, v)  # big-endian bytes, most significant first: A B C D ...
    regs = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    if order in ("CDAB", "DCBA"):
        regs = regs[::-1]
    return [int.from_bytes(r, "big") for r in regs]


def image(spec):
    holding = {}
    for item in spec:
        for i, w in enumerate(words(item["type"], item["order"], item["value"])):
            holding[item["address"] + i] = w
    return holding


def main():
    if sys.argv[1] == "--dump":
        spec = json.load(open(sys.argv[2]))
        print(json.dumps({str(k): v for k, v in sorted(image(spec).items())}))
        return
    port, spec = int(sys.argv[2]), json.load(open(sys.argv[3]))
    holding = image(spec)
    size = max(holding) + 8 if holding else 16
    values = [holding.get(i, 0) for i in range(size)]
    from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
    try:  # pymodbus ≥ 3.10 renamed the per-unit context
        from pymodbus.datastore import ModbusDeviceContext as UnitContext
        unit_kw = "devices"
    except ImportError:
        from pymodbus.datastore import ModbusSlaveContext as UnitContext
        unit_kw = "slaves"
    from pymodbus.server import StartTcpServer
    block = ModbusSequentialDataBlock(0, values)
    try:
        unit = UnitContext(hr=block, ir=ModbusSequentialDataBlock(0, values), zero_mode=True)
    except TypeError:  # newer pymodbus: zero-based always, addresses offset by one in the block
        unit = UnitContext(hr=ModbusSequentialDataBlock(1, values), ir=ModbusSequentialDataBlock(1, values))
    context = ModbusServerContext(**{unit_kw: unit, "single": True})
    print("READY", flush=True)
    StartTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    main()
