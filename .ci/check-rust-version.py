"""Each `rust-version` must be what the lockfile really needs: for every workspace crate, the
highest `rust-version` among the packages a build of that crate compiles for this target
(normal, build and dev dependencies; not those behind a cfg this target does not set) must not
exceed its own; and the workspace's value must equal the highest need of the crates that
inherit it (a crate that needs more, the examples, says so itself)."""
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
members = [p for p in meta["packages"] if p["id"] in meta["workspace_members"]]
ours = {(p["name"], p["version"]) for p in members}
with open("Cargo.toml", "rb") as manifest:
    workspace_value = tomllib.load(manifest)["workspace"]["package"]["rust-version"]

problems = []
inheriting_needs = []
for member in members:
    tree = subprocess.check_output(
        ["cargo", "tree", "-p", member["name"], "--locked", "-e", "normal,build,dev",
         "--prefix", "none", "--format", "{p}"], text=True)
    compiled = {tuple(line.split()[:2]) for line in tree.splitlines() if len(line.split()) >= 2}
    compiled = {(name, version.lstrip("v")) for name, version in compiled} - ours
    needs = [(version_key(declared[p]), declared[p], p) for p in compiled if declared.get(p)]
    need_key, need, (name, version) = max(needs)
    own = member["rust_version"]
    with open(member["manifest_path"], "rb") as manifest:
        inherits = isinstance(tomllib.load(manifest)["package"].get("rust-version"), dict)
    print(f"{member['name']}: rust-version {own}{' (workspace)' if inherits else ''}; "
          f"needs {need} ({name} {version})")
    if version_key(own) < need_key:
        problems.append(f"{member['name']} needs {need} ({name} {version}), says {own}")
    if inherits:
        inheriting_needs.append((need_key, need))
if inheriting_needs and version_key(workspace_value) != max(inheriting_needs)[0]:
    problems.append(f"the workspace says {workspace_value}; its crates need {max(inheriting_needs)[1]}")
if problems:
    sys.exit("\n".join(problems))
