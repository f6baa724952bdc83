"""The workspace's `rust-version` must be what its lockfile really needs: the highest
`rust-version` among the packages that a build of the workspace compiles for this target
(normal, build and dev dependencies; not those behind a cfg this target does not set)."""
import json
import subprocess
import sys
import tomllib


def version_key(text):
    """`1.89` and `1.89.0` are the same version."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked"]))
declared = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}
tree = subprocess.check_output(
    ["cargo", "tree", "--workspace", "--locked", "-e", "normal,build,dev",
     "--prefix", "none", "--format", "{p}"], text=True)
compiled = {tuple(line.split()[:2]) for line in tree.splitlines() if len(line.split()) >= 2}
compiled = {(name, version.lstrip("v")) for name, version in compiled}
workspace = {(p["name"], p["version"]) for p in meta["packages"] if p["source"] is None}
needs = [(version_key(declared[p]), declared[p], p) for p in compiled - workspace if declared.get(p)]
need_key, need, (name, version) = max(needs)
with open("Cargo.toml", "rb") as manifest:
    ours = tomllib.load(manifest)["workspace"]["package"]["rust-version"]
print(f"rust-version {ours}; the lockfile needs {need} ({name} {version})")
if version_key(ours) != need_key:
    sys.exit(f"set rust-version to {need} in Cargo.toml: that is what {name} {version} needs")
